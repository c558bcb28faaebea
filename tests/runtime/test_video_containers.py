"""A video keeps its container where it is one written here: an iPhone's .MOV comes back a .MOV with its PCM sound,
an .mkv an .mkv with its subtitles as they were; every other kind still becomes an .mp4 (runtime.video)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime.cli import collect_named, main, output_name, output_refusals
from runtime.video import muxer_for, transcode_video
from tests.runtime.sample_videos import make_clip, make_tracked_clip
from tests.runtime.test_video import MKVMERGE_STATISTICS, PHONE_TAGS
from tests.runtime.test_video_streams import CUES, TEXT_CUES

av = pytest.importorskip("av", reason="PyAV comes with the video extra")


def _same(frame):
    return frame


def _codec(stream) -> str:
    """A stream's codec by its canonical name ("ass", "subrip"; PyAV's decoder names are "ssa", "srt")."""
    return stream.codec_context.codec.canonical_name


def _packets(path: Path, kind: str) -> list[list[tuple[bytes, float, float]]]:
    """Per stream of ``kind``: its packets' payload, time and duration in seconds."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        found: dict[int, list] = {s.index: [] for s in streams}
        for packet in container.demux(*streams):
            if packet.dts is not None and packet.size:
                found[packet.stream.index].append((bytes(packet), float(packet.pts * packet.time_base),
                                                   float((packet.duration or 0) * packet.time_base)))
        return [found[s.index] for s in streams]


@pytest.mark.parametrize("source,output", [
    ("IMG_0001.MOV", "IMG_0001.MOV"),  # an iPhone's, upper case kept (before: IMG_0001.mp4)
    ("clip.mov", "clip.mov"), ("film.mkv", "film.mkv"), ("film.MKV", "film.MKV"), ("clip.m4v", "clip.m4v"),
    ("clip.mp4", "clip.mp4"),
    ("clip.avi", "clip.mp4"), ("00001.MTS", "00001.mp4"), ("clip.webm", "clip.mp4"), ("clip.ts", "clip.mp4"),
    ("photo.jpg", "photo.jpg"),
])
def test_a_video_keeps_its_container_where_it_is_written_else_becomes_mp4(source, output):
    assert output_name(Path(source)) == output


@pytest.mark.parametrize("target,muxer", [("a.mp4", "mp4"), ("a.M4V", "mp4"), ("a.MOV", "mov"), ("a.mkv", "matroska"),
                                          ("a.avi", "mp4"), ("a", "mp4")])
def test_the_extension_picks_the_muxer(target, muxer):
    assert muxer_for(target) == muxer


def test_an_iphone_mov_comes_back_a_mov_with_its_pcm_sound_and_tags(tmp_path, tiny_weights):
    clip = tmp_path / "IMG_0001.MOV"
    make_clip(clip, frames=3, audio="pcm_s16le", rate=48000, tags=PHONE_TAGS,
              container_options={"movflags": "use_metadata_tags"})
    out = tmp_path / "out"
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["IMG_0001.MOV"]  # before: IMG_0001.mp4
    with av.open(str(out / "IMG_0001.MOV")) as container:
        tags, codec = dict(container.metadata), _codec(container.streams.audio[0])
    assert tags["major_brand"] == "qt  "  # written by the QuickTime muxer, not the MP4 one ("isom")
    assert codec == "pcm_s16le"  # before: re-encoded to AAC (as MP4 needs)
    assert _packets(out / "IMG_0001.MOV", "audio") == _packets(clip, "audio")  # packet for packet
    # The make, model, local capture time and altitude: the MOV muxer writes them as "mdta" keys only when told
    assert {key: tags.get(key) for key in PHONE_TAGS} == PHONE_TAGS, tags


def test_sound_a_mov_cannot_hold_is_reencoded_to_aac(tmp_path):
    clip = tmp_path / "talk.mkv"
    make_clip(clip, frames=3, audio="libopus", rate=48000)  # Opus: MP4 and Matroska take it, MOV does not
    assert transcode_video(clip, tmp_path / "out.mov", _same, progress=False) == 3
    with av.open(str(tmp_path / "out.mov")) as written:
        assert _codec(written.streams.audio[0]) == "aac" and written.metadata["major_brand"] == "qt  "


def test_an_mkv_keeps_its_ass_and_subrip_subtitles_and_fonts_as_they_were(tmp_path, caplog):
    clip = tmp_path / "anime.mkv"
    font = b"\x00\x01\x00\x00" + bytes(range(256))
    make_tracked_clip(clip, subtitles={"ass": CUES, "subrip": TEXT_CUES}, tags={"language": "jpn"}, audio=True,
                      fonts={"OpenSans.ttf": font})
    out = tmp_path / "out"
    out.mkdir()
    staged = []

    def recording(frame):
        staged.append(sorted(p.name for p in out.iterdir()))
        return frame

    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(clip, out / "anime.mkv", recording, progress=False) == 4
    assert staged[0] == ["anime.mkv.partial.mkv"]  # the temporary name keeps the container's extension
    with av.open(str(out / "anime.mkv")) as written, av.open(str(clip)) as source:
        assert written.format.name.startswith("matroska")  # before: an MP4 under an .mkv name
        assert [_codec(s) for s in written.streams.subtitles] == ["ass", "subrip"]  # before: mov_text, the ASS lost
        assert [s.codec_context.extradata for s in written.streams.subtitles] == \
            [s.codec_context.extradata for s in source.streams.subtitles]  # the ASS script's styles
        assert [s.metadata.get("language") for s in written.streams.subtitles] == ["jpn", "jpn"]
        [attached] = [s for s in written.streams if s.type == "attachment"]
        assert (attached.name, attached.mimetype, bytes(attached.data)) == ("OpenSans.ttf", "font/ttf", font)
    assert _packets(out / "anime.mkv", "subtitle") == _packets(clip, "subtitle")  # the same text at the same times
    assert "not carried" not in caplog.text and "styling" not in caplog.text


def test_a_mov_takes_subrip_as_mp4_text_and_names_the_ass_it_cannot_hold(tmp_path, caplog):
    clip = tmp_path / "anime.mkv"
    make_tracked_clip(clip, subtitles={"ass": CUES, "subrip": TEXT_CUES})
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(clip, tmp_path / "out.mov", _same, progress=False) == 4
    with av.open(str(tmp_path / "out.mov")) as written:
        assert [_codec(s) for s in written.streams.subtitles] == ["mov_text"]
    assert "anime.mkv: 1 subtitle stream not carried into the output (#1 ass;" in caplog.text
    assert "the subtitles and data tracks QuickTime (MOV) can store" in caplog.text  # before: "MP4", always


def test_an_mkv_keeps_its_pcm_sound_and_tags_but_not_its_statistics(tmp_path):
    clip = tmp_path / "camera.mkv"
    make_clip(clip, frames=3, audio="pcm_s16le", tags={"DATE_RECORDED": "2026-05-01", "BPS": "1"},
              video_tags={"title": "Main camera", "language": "fra", "ENCODER": "Lavc libx264", **MKVMERGE_STATISTICS},
              sound_tags={"title": "Ambiance", "ENCODER": "Lavc pcm_s16le", **MKVMERGE_STATISTICS})
    assert transcode_video(clip, tmp_path / "out.mkv", _same, progress=False) == 3
    with av.open(str(tmp_path / "out.mkv")) as written:
        tags = dict(written.metadata)
        video, sound = (dict(s.metadata) for s in written.streams)
        codec = _codec(written.streams.audio[0])
    assert codec == "pcm_s16le" and _packets(tmp_path / "out.mkv", "audio") == _packets(clip, "audio")
    assert tags["DATE_RECORDED"] == "2026-05-01" and "BPS" not in tags
    assert video["title"] == "Main camera" and video["language"] == "fra" and sound["title"] == "Ambiance"
    # Matroska writes every track tag it is given: before, mkvmerge's counts (of the source) and the encoder of the
    # source's video came back; the copied sound's encoder is still true of it. (DURATION is the muxer's own.)
    stale = [key for key in (*video, *sound) if key.upper() in set(MKVMERGE_STATISTICS) - {"DURATION"}
             or key.upper().startswith("_STATISTICS_")]
    assert not stale and "ENCODER" not in video and sound["ENCODER"] == "Lavc pcm_s16le", (video, sound)


def test_the_source_encoder_of_a_video_encoded_anew_is_not_kept_in_any_case(tmp_path):
    clip = tmp_path / "camera.mkv"  # FFmpeg and mkvmerge name a Matroska track's encoder in upper case
    make_clip(clip, frames=2, video_tags={"ENCODER": "Lavc58 libx264"})
    assert transcode_video(clip, tmp_path / "out.mp4", _same, progress=False) == 2
    with av.open(str(tmp_path / "out.mp4")) as written:
        # before: written as the MP4 track's compressor name, though the track was encoded here
        assert "Lavc58" not in written.streams.video[0].metadata.get("encoder", ""), written.streams.video[0].metadata


@pytest.mark.parametrize("suffix,brand,tag", [(".mkv", None, ""), (".mov", "qt  ", "hvc1")])
def test_a_10_bit_clip_is_hevc_in_its_own_container(tmp_path, suffix, brand, tag):
    clip = tmp_path / "hdr.mkv"
    make_clip(clip, frames=2, h=32, w=32, codec="ffv1", pix_fmt="yuv420p10le")
    target = tmp_path / f"out{suffix}"
    assert transcode_video(clip, target, _same, progress=False) == 2
    with av.open(str(target)) as written:
        stream = written.streams.video[0]
        assert (_codec(stream), stream.codec_context.pix_fmt) == ("hevc", "yuv420p10le")
        assert written.metadata.get("major_brand") == brand  # Matroska has no brands
        assert stream.codec_context.codec_tag.strip("\x00") == tag  # Matroska names codecs its own way


def test_a_mov_keeps_one_timecode_track(tmp_path, caplog):
    clip = tmp_path / "A001C003.MOV"  # a cinema camera's clip: its timecode in a QuickTime tmcd track
    make_tracked_clip(clip, timecode="01:02:03:04")
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(clip, tmp_path / "out.MOV", _same, progress=False) == 4  # before: "could not write"
    with av.open(str(tmp_path / "out.MOV")) as written:
        [data] = [s for s in written.streams if s.type == "data"]  # before: two, which the header refused
        timecode = data.metadata["timecode"]
    with av.open(str(clip)) as source:
        assert timecode == source.streams.video[0].metadata["timecode"]
    assert "not carried" not in caplog.text


def test_a_mov_output_in_its_own_folder_is_refused_even_with_force(tmp_path, tiny_weights, capsys):
    clip = tmp_path / "clip.mov"
    make_clip(clip, frames=2)
    before = clip.read_bytes()
    # before: written beside it as clip.mp4; now the output's name is the input's
    assert main([str(clip), "-o", str(tmp_path), "--force", "--model", str(tiny_weights), "-q"]) == 1
    assert "is the same file as the input" in capsys.readouterr().err
    assert clip.read_bytes() == before and sorted(p.name for p in tmp_path.glob("clip*")) == ["clip.mov"]


def test_an_input_at_a_movs_temporary_name_is_refused(tmp_path):
    clip = tmp_path / "IMG_0001.MOV"
    out = tmp_path / "out"
    out.mkdir()
    staged = out / "IMG_0001.MOV.partial.MOV"  # the temporary name keeps the case and the container's extension
    make_clip(clip, frames=2)
    make_clip(staged, frames=2)
    inputs = [clip, staged]
    refusals = output_refusals(inputs, [out / output_name(p) for p in inputs])  # (the second's output is itself)
    assert "is at the temporary file name of" in refusals[0], refusals  # before: IMG_0001.mp4.partial.mp4 was


def test_two_videos_of_one_name_in_kept_containers_no_longer_collide(tmp_path):
    for name in ("clip.mov", "clip.mkv", "clip.avi", "clip.ts"):
        make_clip(tmp_path / name, frames=1)
    named = collect_named([tmp_path])
    targets = [tmp_path / "out" / name for _, name in named]
    # clip.avi and clip.ts would both be clip.mp4 (as before); clip.mov and clip.mkv keep their own names
    assert [str(name) for _, name in named] == ["clip.mp4", "clip.mkv", "clip.mov", "clip.mp4"]
    assert sorted(output_refusals([source for source, _ in named], targets)) == [0, 3]
