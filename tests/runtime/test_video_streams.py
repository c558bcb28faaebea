"""A video's subtitles, telemetry and timecode go into the deblurred MP4 as they were (runtime.video_streams): before,
every stream but the picture and the sound was left out, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime.video import transcode_video
from tests.runtime.sample_videos import make_tracked_clip

av = pytest.importorskip("av", reason="PyAV comes with the video extra")

#: Three cues (milliseconds, ASS dialogue text), as MP4 text stores them after FFmpeg's encoder.
CUES = [(0, 100, b"0,0,Default,,0,0,0,,Hello"), (150, 250, b"1,0,Default,,0,0,0,,{\\i1}World{\\i0}"),
        (300, 390, b"2,0,Default,,0,0,0,,third line\\Nsecond row")]
#: The same three as SubRip and WebVTT store them (an HTML-like italic, a line break).
TEXT_CUES = [(0, 100, b"Hello"), (150, 250, b"<i>World</i>"), (300, 390, b"third line\nsecond row")]
NO_CUE = b"\x00\x00"  # an empty MP4 text sample: the gap between two cues


def _same(frame):
    return frame


def _tracks(path: Path, kind: str) -> list[tuple[str | None, dict, list[tuple[bytes, float, float]]]]:
    """Per stream of ``kind`` ("subtitle", "data"): its codec, tags, and packets (payload, time and duration in
    seconds)."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        found = {s.index: [] for s in streams}
        for packet in container.demux(*streams) if streams else ():  # (none: demux() reads every stream)
            if packet.dts is not None:
                found[packet.stream.index].append((bytes(packet), float(packet.pts * packet.time_base),
                                                   float(packet.duration * packet.time_base)))
        return [(s.codec_context.name if s.codec_context else getattr(s, "name", None), dict(s.metadata),
                 found[s.index]) for s in streams]


def _cues(packets: list[tuple[bytes, float, float]]) -> list[tuple[bytes, float, float]]:
    return [p for p in packets if p[0] != NO_CUE]


def _text(sample: bytes) -> bytes:
    """The text of an MP4 text sample: after its length (2 bytes), before its style boxes."""
    return sample[2:2 + int.from_bytes(sample[:2], "big")]


def test_mp4_text_subtitles_are_copied_cue_for_cue_with_their_language(tmp_path, caplog):
    clip = tmp_path / "talk.mp4"
    make_tracked_clip(clip, subtitles={"mov_text": CUES}, tags={"language": "deu", "title": "Untertitel"},
                      audio=True)
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(clip, tmp_path / "out.mp4", _same, progress=False) == 4
    [(codec, tags, packets)] = _tracks(tmp_path / "out.mp4", "subtitle")
    [(_, source_tags, source_packets)] = _tracks(clip, "subtitle")
    assert codec == "mov_text" and len(_cues(packets)) == 3  # before: no subtitle stream at all
    assert _cues(packets) == _cues(source_packets)  # the same bytes at the same times, for as long
    # and the empty samples between them (the muxer writes them itself: copied too, they came out doubled)
    assert packets == source_packets
    assert tags["language"] == source_tags["language"] == "deu" and tags.get("name") == "Untertitel"
    assert "not carried" not in caplog.text


def test_gopro_telemetry_is_copied_packet_for_packet(tmp_path, caplog):
    clip = tmp_path / "GX010042.MP4"  # a GoPro's GPMF track: GPS, accelerometer, gyroscope (gpmd)
    telemetry = [(t, bytes([t // 100]) * 16 + b"DEVC") for t in (0, 100, 200, 300)]
    make_tracked_clip(clip, telemetry=telemetry, audio=True)
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        transcode_video(clip, tmp_path / "out.mp4", _same, progress=False)
    [(_, tags, packets)] = _tracks(tmp_path / "out.mp4", "data")  # before: no data stream
    [(_, source_tags, source_packets)] = _tracks(clip, "data")
    assert packets == source_packets and [p[:2] for p in packets] == [(p, t / 1000) for t, p in telemetry]
    assert tags["handler_name"] == source_tags["handler_name"]
    assert (tmp_path / "out.mp4").read_bytes().count(b"gpmd") == clip.read_bytes().count(b"gpmd") > 0
    assert "not carried" not in caplog.text  # before: "1 data stream not carried into the output"


def test_the_timecode_track_is_kept(tmp_path, caplog):
    clip = tmp_path / "A001C003.mov"  # a cinema camera's clip: its timecode in a QuickTime tmcd track
    make_tracked_clip(clip, timecode="01:02:03:04")
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        transcode_video(clip, tmp_path / "out.mp4", _same, progress=False)
    [(_, tags, packets)] = _tracks(tmp_path / "out.mp4", "data")  # before: none
    [(_, source_tags, source_packets)] = _tracks(clip, "data")
    assert tags["timecode"] == source_tags["timecode"] and packets == source_packets  # frame 37234 at 10 fps
    assert "not carried" not in caplog.text


@pytest.mark.parametrize("codec", ["subrip", "webvtt"])
def test_subrip_and_webvtt_are_written_as_mp4_text(tmp_path, codec, caplog):
    clip = tmp_path / "film.mkv"
    make_tracked_clip(clip, subtitles={codec: TEXT_CUES}, tags={"language": "fra", "title": "Sous-titres"})
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        transcode_video(clip, tmp_path / "out.mp4", _same, progress=False)
    [(out_codec, tags, packets)] = _tracks(tmp_path / "out.mp4", "subtitle")  # before: none (MP4 has no SubRip)
    cues = _cues(packets)
    assert out_codec == "mov_text" and [(t, d) for _, t, d in cues] == [(0, 0.1), (0.15, 0.1), (0.3, 0.09)]
    assert [_text(c[0]) for c in cues] == [b"Hello", b"World", b"third line\nsecond row"]
    # After the text, a style box where the cue had a style: italic over "World" (its record's face style byte)
    assert cues[1][0][2 + 5 + 4:2 + 5 + 8] == b"styl" and cues[1][0][2 + 5 + 10 + 6] == 2
    assert len(cues[0][0]) == 2 + 5 and len(cues[2][0]) == 2 + 21  # none where the cue had none
    assert tags["language"] == "fra" and tags.get("name") == "Sous-titres"
    assert "not carried" not in caplog.text and "cue" not in caplog.text


def test_a_damaged_cue_is_skipped_and_lost_styling_is_said(tmp_path, caplog):
    clip = tmp_path / "film.mkv"
    cues = [(0, 100, b'<font color="red">red</font>'), (100, 200, b"\xff\xfe not text"), (200, 300, b"fine")]
    make_tracked_clip(clip, subtitles={"subrip": cues})
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(clip, tmp_path / "out.mp4", _same, progress=False) == 4
    [(_, _, packets)] = _tracks(tmp_path / "out.mp4", "subtitle")
    assert [(_text(p[0]), p[1]) for p in _cues(packets)] == [(b"red", 0.0), (b"fine", 0.2)]
    assert "film.mkv: 1 damaged packet(s) skipped" in caplog.text
    assert "film.mkv: subtitle stream #1 (subrip): 1 of 2 cues lose styling MP4 text cannot hold" in caplog.text


def test_streams_mp4_cannot_hold_are_named_in_a_warning(tmp_path, caplog):
    styled = tmp_path / "anime.mkv"  # ASS: placed and styled by its script, which MP4 text cannot hold
    make_tracked_clip(styled, subtitles={"ass": CUES, "subrip": TEXT_CUES})
    drone = tmp_path / "flight.ts"  # a drone's MISB KLV metadata in MPEG-TS: MP4 has no KLV
    make_tracked_clip(drone, telemetry=[(0, b"\x06\x0e\x2b\x34" + bytes(12))])
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        transcode_video(styled, tmp_path / "a.mp4", _same, progress=False)
        transcode_video(drone, tmp_path / "b.mp4", _same, progress=False)
    assert [t[0] for t in _tracks(tmp_path / "a.mp4", "subtitle")] == ["mov_text"]  # the SubRip one
    # before: "2 subtitle streams not carried ...", and the KLV one unnamed
    assert "anime.mkv: 1 subtitle stream not carried into the output (#1 ass;" in caplog.text
    assert "flight.ts: 1 data stream not carried into the output (#1 klv;" in caplog.text
    assert not _tracks(tmp_path / "b.mp4", "data")


def test_a_cue_out_of_time_order_is_skipped_not_fatal(tmp_path, caplog):
    clip = tmp_path / "film.mkv"
    make_tracked_clip(clip, subtitles={"subrip": TEXT_CUES})
    data = bytearray(clip.read_bytes())
    at = data.index(b"third line")  # its Matroska block: track 0x82, time (2 bytes, from its cluster's), flags
    assert data[at - 4:at] == b"\x82\x01\x2c\x00"  # 300 ms
    data[at - 3:at - 1] = (50).to_bytes(2, "big")  # 50 ms: before the cue read before it (as a damaged file has it)
    clip.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(clip, tmp_path / "out.mp4", _same, progress=False) == 4  # the MP4 muxer refuses it
    [(_, _, packets)] = _tracks(tmp_path / "out.mp4", "subtitle")
    assert [(_text(p[0]), p[1]) for p in _cues(packets)] == [(b"Hello", 0.0), (b"World", 0.15)]
    assert "1 damaged packet(s) skipped (a subtitle packet out of time order)" in caplog.text


def test_untimed_packets_are_kept_in_their_place(tmp_path):
    from runtime.video import _Damage
    from runtime.video_streams import Carried

    clip = tmp_path / "GX010042.MP4"
    make_tracked_clip(clip, telemetry=[(t, bytes([t // 100]) * 4) for t in (0, 100, 250, 300)])
    damage = _Damage(av)
    with av.open(str(clip)) as container, av.open(str(tmp_path / "out.mp4"), "w") as output:
        video = output.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        carried = Carried(av, output, container, container.streams.video[0], [], video, clip, failed=lambda: False)
        for packet in container.demux(*carried.streams):
            if packet.size and packet.dts in (0, 250):
                packet.pts = packet.dts = None  # as some demuxers give a data packet: no time at all
            carried.write(packet, True, damage)
        carried.finish(damage)
    [(_, _, packets)] = _tracks(tmp_path / "out.mp4", "data")
    # At the stream's start, and at its previous packet's time (after it): none lost, none out of order
    assert [p[:2] for p in packets] == [(bytes([i]) * 4, t) for i, t in ((0, 0), (1, 0.1), (2, 0.1), (3, 0.3))]
    assert damage.count == 0
