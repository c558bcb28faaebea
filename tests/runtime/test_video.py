"""Videos keep their sound, timing, orientation and look through the deblurring (runtime.video, PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.video import kept_tags, transcode_video
from tests.runtime.sample_videos import make_clip, textured

av = pytest.importorskip("av", reason="PyAV comes with the video extra")


def _make(path: Path, frames: int = 6, h: int = 48, w: int = 64, audio: str | None = "aac", rotation: int = 0,
          times: list[int] | None = None, tags: dict | None = None) -> list[np.ndarray]:
    """A clip of ``frames`` textured frames at 10 fps (or at ``times``, in tenths of a second) with a tone in
    ``audio``'s codec, a display ``rotation`` and container ``tags``, stored nearly losslessly; its frames."""
    return make_clip(path, frames, h, w, audio=audio, rotation=rotation, times=times, tags=tags, crf=10)


def _read(path: Path) -> tuple[list[np.ndarray], list[float], dict]:
    """Frames (as stored, BGR), their times in seconds, and per audio stream: codec, sample count, packet bytes."""
    with av.open(str(path)) as container:
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.time))
        container.seek(0)
        sound = {}
        for stream in container.streams.audio:
            packets = [bytes(p) for p in container.demux(stream) if p.size]
            sound[stream.index] = (stream.codec_context.name, stream.duration and float(stream.duration *
                                                                                          stream.time_base), packets)
        tags = dict(container.metadata)
    return frames, times, {"sound": sound, "tags": tags}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_sound_is_copied_packet_for_packet_and_tags_kept(tmp_path, tiny_weights):
    clip = tmp_path / "clip.mp4"
    _make(clip, tags={"title": "harbour", "creation_time": "2026-12-05T10:00:00.000000Z"})
    out = tmp_path / "out"
    assert main([str(clip), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    frames, _, got = _read(out / "clip.mp4")
    _, _, sent = _read(clip)
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    [(codec, _, packets)] = got["sound"].values()
    [(_, _, source_packets)] = sent["sound"].values()
    assert codec == "aac" and packets == source_packets  # before: the output had no sound at all
    assert got["tags"]["title"] == "harbour" and got["tags"]["creation_time"].startswith("2026-12-05T10:00:00")


#: What an iPhone writes in a clip's container (as QuickTime "mdta" keys), and a key of another app.
PHONE_TAGS = {"creation_time": "2026-05-01T10:30:00.000000Z", "location": "+48.8584+002.2945/",
              "com.apple.quicktime.creationdate": "2026-05-01T12:30:00+0200",  # local time: Apple Photos sorts by it
              "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",  # with the altitude
              "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 15", "title": "harbour",
              "org.example.take": "7"}
#: What mkvmerge counts of each track of a Matroska file: false about a track encoded anew.
MKVMERGE_STATISTICS = {"BPS": "123456", "DURATION": "00:00:00.300000000", "NUMBER_OF_FRAMES": "3",
                       "NUMBER_OF_BYTES": "4630", "_STATISTICS_WRITING_APP": "mkvmerge v80.0 ('Roundabout') 64-bit",
                       "_STATISTICS_TAGS": "BPS DURATION NUMBER_OF_FRAMES NUMBER_OF_BYTES"}


def _tags(path: Path) -> tuple[dict, list[dict]]:
    """The container's tags and each stream's."""
    with av.open(str(path)) as container:
        return dict(container.metadata), [dict(s.metadata) for s in container.streams]


def test_a_phones_tags_and_any_other_container_tag_are_kept(tmp_path):
    clip = tmp_path / "IMG_0001.MOV"
    make_clip(clip, frames=2, tags=PHONE_TAGS, container_options={"movflags": "use_metadata_tags"})
    assert transcode_video(clip, tmp_path / "out.mp4", lambda frame: frame, progress=False) == 2
    tags, _ = _tags(tmp_path / "out.mp4")
    # before: only creation_time, location and title; the make, model, local time and altitude were lost
    assert {key: tags.get(key) for key in PHONE_TAGS} == PHONE_TAGS, tags
    assert tags["major_brand"] == "isom" and tags["encoder"].startswith("Lavf")  # the output's own, not "qt  "


def test_standard_tags_stay_where_players_look_for_them(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2, tags={"title": "harbour", "comment": "tripod", "creation_time": PHONE_TAGS[
        "creation_time"], "location": PHONE_TAGS["location"]})
    assert transcode_video(clip, tmp_path / "out.mp4", lambda frame: frame, progress=False) == 2
    tags, _ = _tags(tmp_path / "out.mp4")
    assert tags["title"] == "harbour" and tags["comment"] == "tripod" and tags["location"] == PHONE_TAGS["location"]
    # iTunes-style atoms (Apple's and Windows' players read the title there), not QuickTime "mdta" keys
    data = (tmp_path / "out.mp4").read_bytes()
    assert b"\xa9nam" in data and b"\xa9cmt" in data and b"mdta" not in data


def test_matroska_tags_are_kept_but_not_those_false_about_the_output(tmp_path):
    clip = tmp_path / "camera.mkv"
    statistics = {"BPS": "1", "NUMBER_OF_FRAMES": "3", "_STATISTICS_WRITING_APP": "mkvmerge v80.0"}
    make_clip(clip, frames=3, audio="aac", tags={"DATE_RECORDED": "2026-05-01", **statistics},
              video_tags={"title": "Main camera", "language": "fra", **MKVMERGE_STATISTICS},
              sound_tags={"title": "Ambiance", **MKVMERGE_STATISTICS})
    sent, [sent_video, _] = _tags(clip)
    assert statistics.items() <= sent.items() and MKVMERGE_STATISTICS.items() <= sent_video.items()
    assert transcode_video(clip, tmp_path / "out.mp4", lambda frame: frame, progress=False) == 3
    tags, streams = _tags(tmp_path / "out.mp4")
    assert tags["DATE_RECORDED"] == "2026-05-01"  # before: lost (MP4 has no atom for it)
    stale = [key for tags in (tags, *streams) for key in tags
             if key.upper() in MKVMERGE_STATISTICS or key.upper().startswith("_STATISTICS_")]
    assert not stale, stale  # the source's bit rate and frame count are not the output's
    video = streams[0]
    assert video.get("name") == "Main camera" and video.get("language") == "fra", video  # before: untitled, "und"
    # in any case: Matroska writes its tags' names in upper case
    assert kept_tags({"ENCODER": "mkvmerge v80.0", "Major_Brand": "qt  ", "bps": "1", "title": "t"}) == {"title": "t"}


def test_paths_may_be_strings(tmp_path):
    clip = tmp_path / "clip.mp4"
    _make(clip, frames=3, audio=None)
    assert transcode_video(str(clip), str(tmp_path / "out.mp4"), lambda frame: frame, progress=False) == 3
    assert len(_read(tmp_path / "out.mp4")[0]) == 3


def test_sound_mp4_cannot_hold_is_reencoded_to_aac(tmp_path):
    clip = tmp_path / "clip.mkv"  # PCM in Matroska: MP4 takes no raw PCM
    _make(clip, frames=10, audio="pcm_s16le")
    target = tmp_path / "out.mp4"
    assert transcode_video(clip, target, lambda frame: frame, progress=False) == 10
    [(codec, seconds, packets)] = _read(target)[2]["sound"].values()
    assert codec == "aac" and packets and abs(seconds - 1.0) < 0.15, (codec, seconds)


@pytest.mark.parametrize("source,audio", [("clip.mp4", "aac"), ("clip.mkv", "pcm_s16le")])  # copied; encoded anew
def test_sound_keeps_its_language_title_and_disposition(tmp_path, source, audio):
    clip = tmp_path / source
    make_clip(clip, frames=4, audio=audio, sound_tags={"language": "fra", "title": "Commentaire"})
    target = tmp_path / "out.mp4"
    assert transcode_video(clip, target, lambda frame: frame, progress=False) == 4
    with av.open(str(target)) as container:
        [stream] = container.streams.audio
        tags, default = dict(stream.metadata), bool(stream.disposition & av.stream.Disposition.default)
    # before: "und" and no title (a dubbed film's languages, a commentary track, lost)
    assert tags.get("language") == "fra" and tags.get("name") == "Commentaire" and default, tags


def test_frames_keep_their_times_and_their_look(tmp_path):
    clip = tmp_path / "clip.mp4"
    _make(clip, frames=5, audio=None, times=[0, 1, 3, 7, 8])  # a variable frame rate, as phones record
    target = tmp_path / "out.mp4"
    assert transcode_video(clip, target, lambda frame: frame, progress=False) == 5
    frames, times, _ = _read(target)
    assert np.allclose(times, [0, 0.1, 0.3, 0.7, 0.8], atol=1e-3), times  # before: a constant rate, re-timed
    # CRF 18: re-encoding the decoded frames costs little next to what the network restores.
    source = _read(clip)[0]
    assert len(frames) == 5 and min(_psnr(a, b) for a, b in zip(frames, source)) > 36


def test_rotated_phone_clips_are_deblurred_upright(tmp_path):
    import cv2

    clip = tmp_path / "portrait.mp4"
    _make(clip, frames=3, h=32, w=48, audio=None, rotation=90)
    seen = []
    transcode_video(clip, tmp_path / "out.mp4", lambda frame: seen.append(frame) or frame, progress=False)
    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # as players show it (OpenCV's default here: sideways, as before)
    ok, shown = capture.read()
    capture.release()
    assert ok and shown.shape == (48, 32, 3) and seen[0].shape == (48, 32, 3)
    assert np.abs(seen[0].astype(int) - shown).max() <= 3  # turned the same way, not the other
    frames, _, _ = _read(tmp_path / "out.mp4")
    assert frames[0].shape == (48, 32, 3)  # stored upright, with no rotation left to apply


def test_odd_sizes_are_padded_and_failures_leave_nothing(tmp_path, caplog):
    clip = tmp_path / "clip.mp4"
    _make(clip, frames=2, audio=None)
    target = tmp_path / "out.mp4"
    assert transcode_video(clip, target, lambda frame: frame[:47, :63], progress=False) == 2
    assert _read(target)[0][0].shape == (48, 64, 3) and "47x63 frames are written as 48x64" in caplog.text

    def fails(frame):
        raise RuntimeError("the network stopped")

    with pytest.raises(RuntimeError):
        transcode_video(clip, tmp_path / "never.mp4", fails, progress=False)
    sound_only = tmp_path / "sound.m4a"
    with av.open(str(sound_only), "w") as out:
        stream = out.add_stream("aac", rate=8000, layout="mono")
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        tone.sample_rate = 8000
        out.mux(stream.encode(tone))
        out.mux(stream.encode(None))
    with pytest.raises(OSError, match="sound.m4a: has no video stream"):
        transcode_video(sound_only, tmp_path / "never.mp4", lambda frame: frame, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "out.mp4", "sound.m4a"]


def _coloured(path: Path, codec: str, pix_fmt: str, tags: dict, dtype=np.uint8) -> np.ndarray:
    """Two frames of two saturated halves, converted and tagged with ``tags`` (matrix, primaries, transfer, range)
    as a camera writes them; returns the BGR image."""
    top = 255 if dtype == np.uint8 else 65535
    image = np.zeros((64, 96, 3), dtype)
    image[:, :48] = np.array([40, 200, 60]) * top // 255
    image[:, 48:] = np.array([200, 30, 180]) * top // 255
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=10)
        video.width, video.height, video.pix_fmt = 96, 64, pix_fmt
        video.options = {"crf": "10", **({"x265-params": "log-level=none:bframes=0"} if codec == "libx265" else {})}
        for name, value in tags.items():
            setattr(video.codec_context, name, value)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24" if dtype == np.uint8 else "bgr48le").reformat(
                format=pix_fmt, dst_colorspace=tags["colorspace"], dst_color_range=tags["color_range"])
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return image


def _as_tagged(path: Path, fmt: str = "bgr24") -> tuple[np.ndarray, tuple]:
    """The first frame as a player shows it (with the file's own tags) and the stream's (matrix, primaries,
    transfer, range, codec, profile)."""
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        frame = next(container.decode(video=0))
        tags = (context.colorspace, context.color_primaries, context.color_trc, context.color_range, context.name)
        return frame.to_ndarray(format=fmt), tags


def test_colour_tags_and_matrix_are_kept(tmp_path):
    clip = tmp_path / "hd.mp4"
    bt709 = {"colorspace": 1, "color_primaries": 1, "color_trc": 1, "color_range": 1}
    _coloured(clip, "libx264", "yuv420p", bt709)
    assert transcode_video(clip, tmp_path / "out.mp4", lambda frame: frame, progress=False) == 2
    shown, tags = _as_tagged(tmp_path / "out.mp4")
    source, _ = _as_tagged(clip)
    assert tags == (1, 1, 1, 1, "h264")  # before: unspecified (2, 2, 2, 0)
    # before: converted with BT.601 and untagged: the green half 25 levels darker where players assume BT.709
    assert np.abs(shown.astype(int) - source).max() <= 4


def test_ten_bit_hdr_clips_stay_ten_bit_hdr(tmp_path, tiny_weights, capfd):
    clip = tmp_path / "hdr.mp4"
    pq = {"colorspace": 9, "color_primaries": 9, "color_trc": 16, "color_range": 1}  # BT.2020, PQ: a phone's HDR
    _coloured(clip, "libx265", "yuv420p10le", pq, dtype=np.uint16)
    seen = []
    assert transcode_video(clip, tmp_path / "same.mp4", lambda frame: seen.append(frame.dtype) or frame,
                           progress=False) == 2
    assert seen == [np.uint16, np.uint16]  # the transform gets 16-bit frames: no 8-bit rounding on the way
    shown, tags = _as_tagged(tmp_path / "same.mp4", "bgr48le")
    source, _ = _as_tagged(clip, "bgr48le")
    halves = np.r_[0:40, 56:96]  # away from the edge between them, which 4:2:0 chroma blurs in either file
    assert tags == (9, 9, 16, 1, "hevc") and np.abs(shown.astype(int) - source)[:, halves].max() <= 4 * 257
    with av.open(str(tmp_path / "same.mp4")) as container:
        context = container.streams.video[0].codec_context
        assert context.format.name == "yuv420p10le" and context.codec_tag == "hvc1"
    capfd.readouterr()
    assert main([str(clip), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    assert _as_tagged(tmp_path / "out" / "hdr.mp4")[1] == (9, 9, 16, 1, "hevc")
    assert capfd.readouterr().err == ""  # x265's own banner and statistics stay off the terminal


def test_without_pyav_a_video_fails_in_one_line_naming_the_extra(tmp_path, tiny_weights, monkeypatch, capsys):
    import sys

    clip = tmp_path / "clip.mp4"
    _make(clip, frames=2, audio=None)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError, as where it is not installed
    assert main([str(clip), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {clip}: deblurring a video needs PyAV, which is not installed: pip install " \
                  "'banet-deploy[video]' (PyAV)", err
    assert not any((tmp_path / "out").iterdir())


def test_camcorder_files_are_videos(tmp_path, tiny_weights):
    clip = tmp_path / "00001.MTS"  # AVCHD: MPEG-TS, as camcorders name it
    with av.open(str(clip), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(textured(48, 64, i), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert main([str(clip), "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    frames, _, _ = _read(tmp_path / "out" / "00001.mp4")  # before: "not an image OpenCV can decode"
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


def test_streams_not_carried_are_named_in_a_warning(tmp_path, caplog):
    clip = tmp_path / "stereo.mkv"  # a stereo camera: two video streams
    with av.open(str(clip), "w") as out:
        eyes = [out.add_stream("libx264", rate=10) for _ in range(2)]
        for eye in eyes:
            eye.width, eye.height, eye.pix_fmt = 64, 48, "yuv420p"
        for i in range(2):
            for eye in eyes:
                frame = av.VideoFrame.from_ndarray(textured(48, 64, i), format="bgr24")
                frame.pts, frame.time_base = i, Fraction(1, 10)
                out.mux(eye.encode(frame))
        for eye in eyes:
            out.mux(eye.encode(None))
    assert transcode_video(clip, tmp_path / "out.mp4", lambda frame: frame, progress=False) == 2
    assert "stereo.mkv: 1 video stream not carried into the output" in caplog.text  # before: an info line -q hid
