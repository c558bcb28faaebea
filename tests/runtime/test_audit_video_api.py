"""Audit of videos, ROS bags and the Deblurrer API as a hostile user would try them: each test failed before the
fix its docstring names."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.sample_videos import textured

av = pytest.importorskip("av", reason="PyAV comes with the video extra")


def _ts_with_silent_track(path: Path, audio: str = "aac", frames: int = 5) -> Path:
    """An MPEG-TS whose audio track is declared (in its program table) but has no packet: what a DVR, a dashcam
    with its microphone off or a camera clip cut before its first sound holds. FFmpeg finds no sample rate for it."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 48, 32, "yuv420p"
        out.add_stream(audio, rate=48000, layout="stereo")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(textured(32, 48, i), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize(("audio", "suffix"), [("aac", ".mp4"), ("mp2", ".mp4"), ("ac3", ".mkv")])
def test_declared_audio_track_without_sound_is_left_out_with_a_warning(tmp_path, caplog, audio, suffix):
    """runtime/video.py ``_transcode`` took every audio stream: one FFmpeg found no sample rate for was copied into
    an MP4 whose header then failed ("could not write the MP4 (Invalid argument)", the whole video lost), or came
    out in Matroska as an empty AAC track after "its 0-channel sound is written as stereo"."""
    from runtime.video import transcode_video

    source = _ts_with_silent_track(tmp_path / f"dvr_{audio}.ts", audio)
    with av.open(str(source)) as container:
        assert container.streams.audio[0].rate == 0  # the case: a track FFmpeg has no parameters for
    target = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="runtime.video"):
        assert transcode_video(source, target, lambda frame: frame, progress=False) == 5
    with av.open(str(target)) as container:
        assert not container.streams.audio
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert any("audio stream #1" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
    assert not any("0-channel" in r.getMessage() for r in caplog.records)


def test_sound_that_is_there_is_still_kept_next_to_a_silent_track(tmp_path):
    """The check leaves a track with sound alone: a TS with real sound keeps it."""
    from runtime.video import transcode_video
    from tests.runtime.sample_videos import make_clip

    source = tmp_path / "clip.ts"
    make_clip(source, frames=5, h=32, w=48, audio="mp2", rate=44100)
    target = tmp_path / "clip.mp4"
    transcode_video(source, target, lambda frame: frame, progress=False)
    with av.open(str(target)) as container:
        assert len(container.streams.audio) == 1 and container.streams.audio[0].rate == 44100


def test_ros2_custom_data_is_kept(tmp_path):
    """runtime/rosbag.py ``_writer`` made the ROS 2 writer without the source's ``custom_data`` (metadata.yaml:
    ``ros2 bag record --custom-data``, a robot's name or a run's id): the output's was null."""
    pytest.importorskip("rosbags", reason="reading ROS bags needs the rosbag extra (rosbags)")
    from ruamel.yaml import YAML

    from runtime.rosbag import transcode_bag
    from tests.runtime.sample_bags import make_bag

    source = make_bag(tmp_path / "run", "mcap", topics=[("/cam", "bgr8")], count=2)
    yaml = YAML(typ="safe")
    metadata = yaml.load((source / "metadata.yaml").read_text())
    metadata["rosbag2_bagfile_information"]["custom_data"] = {"robot": "r7", "run": 42}
    with (source / "metadata.yaml").open("w") as handle:
        yaml.dump(metadata, handle)
    target = tmp_path / "out" / "run"
    target.parent.mkdir()
    assert transcode_bag(source, target, lambda image: image, progress=False) == {"/cam": 2}
    written = yaml.load((target / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert written["custom_data"] == {"robot": "r7", "run": "42"}


@pytest.mark.parametrize("link", [False, True])
def test_video_written_over_its_source_is_refused(tmp_path, link):
    """runtime/video.py ``transcode_video`` renamed the deblurred video over the one it read when ``target`` was
    ``source`` (or a hard link to it): the recording was lost, silently."""
    import os

    from runtime.video import transcode_video
    from tests.runtime.sample_videos import make_clip

    source = tmp_path / "clip.mp4"
    make_clip(source, frames=3)
    before = source.read_bytes()
    target = source
    if link:
        target = tmp_path / "other.mp4"
        os.link(source, target)
    with pytest.raises(OSError, match="is the video being read"):
        transcode_video(source, target, lambda frame: 255 - frame, progress=False)
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"clip.mp4", target.name})


def _invert(image: np.ndarray) -> np.ndarray:
    return np.iinfo(image.dtype).max - image


@pytest.mark.parametrize("kind", ["ros1", "sqlite3"])
def test_bag_written_over_itself_is_refused(tmp_path, kind):
    """runtime/rosbag.py ``transcode_bag`` wrote the deblurred bag over the recording it read (``target`` =
    ``source``) or, for a ROS 2 folder, into the recording's folder."""
    pytest.importorskip("rosbags", reason="reading ROS bags needs the rosbag extra (rosbags)")
    from runtime.rosbag import BagError, transcode_bag
    from tests.runtime.sample_bags import make_bag

    source = make_bag(tmp_path / ("run.bag" if kind == "ros1" else "run"), kind, count=2)
    files = sorted(source.rglob("*")) if source.is_dir() else [source]
    before = {p: p.read_bytes() for p in files}
    targets = [source] + ([source / "out"] if kind != "ros1" else [])
    for target in targets:
        with pytest.raises(BagError, match="is the bag being read"):
            transcode_bag(source, target, _invert, progress=False)
    assert {p: p.read_bytes() for p in (sorted(source.rglob("*")) if source.is_dir() else [source])} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_ros2_bag_never_replaces_a_folder_that_is_not_a_bag(tmp_path):
    """runtime/rosbag.py ``_commit`` replaces a ROS 2 output folder whole: ``transcode_bag("data/run", "data")``
    (a folder given as the output, as the command line's ``-o``) deleted ``data/`` with the recording and every other
    file in it, and an existing folder of photos was replaced by the bag."""
    pytest.importorskip("rosbags", reason="reading ROS bags needs the rosbag extra (rosbags)")
    from runtime.rosbag import BagError, transcode_bag
    from tests.runtime.sample_bags import make_bag

    data = tmp_path / "data"
    source = make_bag(data / "run", "sqlite3", count=2)
    (data / "notes.txt").write_text("mine")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"mine")
    with pytest.raises(BagError, match="holds the bag being read"):
        transcode_bag(source, data, _invert, progress=False)
    with pytest.raises(BagError, match="not a ROS 2 bag folder"):
        transcode_bag(source, photos, _invert, progress=False)
    assert (data / "notes.txt").read_text() == "mine" and (source / "metadata.yaml").is_file()
    assert [p.name for p in photos.iterdir()] == ["a.jpg"]
    # an earlier output bag is still replaced, as documented
    target = tmp_path / "out"
    assert transcode_bag(source, target, _invert, progress=False)
    assert transcode_bag(source, target, _invert, progress=False)
    assert (target / "metadata.yaml").is_file()


def _first_times(path: Path) -> dict[str, float]:
    """The first packet's time (seconds) of the first video and audio stream."""
    firsts: dict[str, float] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is not None and packet.stream.type in ("video", "audio"):
                firsts.setdefault(packet.stream.type, float(packet.pts * packet.stream.time_base))
    return firsts


def test_reencoded_sound_stays_in_sync_with_a_late_starting_clock(tmp_path):
    """runtime/video_encoding.py ``Sound._encode`` gave the AAC encoder frames without times, so it counted from 0
    while the video kept its source's times: an MPEG-TS's sound (MPEG audio, re-encoded for MP4), which starts at the
    TS clock's 0.2 s like its picture, came out 0.2 s early (a broadcast or camcorder clip starting at 1.4 s: 1.4 s
    out of sync)."""
    from runtime.video import transcode_video
    from tests.runtime.sample_videos import make_clip

    source = tmp_path / "hdv.ts"
    make_clip(source, frames=20, h=32, w=48, audio="mp2", rate=44100)
    before = _first_times(source)
    assert before["video"] == before["audio"] > 0.1  # the case: both start after 0, together
    target = tmp_path / "hdv.mp4"
    transcode_video(source, target, lambda frame: frame, progress=False)
    after = _first_times(target)
    assert after["video"] == pytest.approx(before["video"])
    # AAC's first packet is its encoder's priming (1024 samples before the sound, skipped by the MP4's edit list)
    assert after["audio"] + 1024 / 44100 == pytest.approx(before["audio"], abs=1e-3)
