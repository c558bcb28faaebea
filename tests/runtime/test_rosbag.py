"""A robot's recording: a ROS bag's camera topics deblurred into a new bag of its kind, everything else as recorded."""

import contextlib
import logging
import shutil
import sys

import cv2
import numpy as np
import pytest

from runtime import Deblurrer
from runtime.cli import main as runtime_main
from runtime.images import split_image
from runtime.rosbag import BagError, main, require_rosbags, transcode_bag
from tests.runtime.sample_bags import DEFAULT_TOPICS, HUMBLE_QOS, frame, humble_bag, make_bag, pixels_for, read_bag

pytest.importorskip("rosbags", reason="reading ROS bags needs the rosbag extra (rosbags)")

_TOPICS = (("/camera/image_raw", "rgb8"), ("/camera/image_raw/compressed", "jpeg"), ("/imu", "imu"),
           ("/depth", "16UC1"), ("/ir", "mono16_be"), ("/front", "bgra8"), ("/png", "png"))


def _no_blue(image: np.ndarray) -> np.ndarray:
    """A stand-in for the network that shows the channel order it was given: BGR(A) in, blue cleared; it refuses
    what Deblurrer refuses (split_image: too small, wrong shape)."""
    split_image(image)
    out = image.copy()
    if out.ndim == 3:
        out[..., 0] = 0
    else:
        out = out // 2  # grey: halved (wrong in the other byte order)
    return out


def _bag(tmp_path, kind: str, **options):
    if kind.startswith("bare-"):  # a ROS 2 storage file without its folder, as tools pass them around
        suffix = kind.removeprefix("bare-")
        folder = make_bag(tmp_path / "folder", "mcap" if suffix == "mcap" else "sqlite3", **options)
        [storage] = folder.glob(f"*.{suffix}")
        return shutil.move(storage, tmp_path / f"drive.{suffix}")
    return make_bag(tmp_path / ("drive.bag" if kind == "ros1" else "drive"), kind, **options)


@pytest.mark.parametrize("kind", ["ros1", "mcap", "sqlite3", "bare-mcap", "bare-db3"])
def test_camera_topics_are_deblurred_and_everything_else_kept_as_recorded(tmp_path, kind, caplog):
    source = _bag(tmp_path, kind, topics=_TOPICS, step_pad=6)
    target = tmp_path / "out" / source.name
    target.parent.mkdir()
    with caplog.at_level(logging.WARNING):
        counts = transcode_bag(source, target, _no_blue, progress=False)
    assert counts == {"/camera/image_raw": 3, "/camera/image_raw/compressed": 3, "/ir": 3, "/front": 3, "/png": 3}
    assert target.is_dir() == source.is_dir()
    before, after = read_bag(source), read_bag(target)
    assert [(t, ty, stamp) for t, ty, stamp, _, _ in after] == [(t, ty, stamp) for t, ty, stamp, _, _ in before]
    for (topic, _, _, old, raw), (_, _, _, new, written) in zip(before, after):
        index = old.header.stamp.nanosec // 100_000_000
        if topic in ("/imu", "/depth"):
            assert written == raw, topic  # byte for byte
            continue
        assert (new.header.stamp, new.header.frame_id) == (old.header.stamp, old.header.frame_id)
        if topic.endswith(("compressed", "png")):
            assert new.format == old.format
            decoded = cv2.imdecode(np.asarray(new.data), cv2.IMREAD_UNCHANGED)
            expected = _no_blue(cv2.imdecode(np.asarray(old.data), cv2.IMREAD_UNCHANGED))
            error = np.abs(decoded.astype(int) - expected)
            assert error.max() == 0 if topic == "/png" else error.mean() < 8, topic  # JPEG: encoded anew (noise)
            continue
        encoding = dict(_TOPICS)[topic]
        assert (new.encoding, new.step, new.is_bigendian) == (old.encoding, old.step, old.is_bigendian)
        rows = np.asarray(new.data).reshape(new.height, new.step)
        expected = pixels_for(encoding, _no_blue(frame(index))) if encoding != "mono16_be" else \
            pixels_for(encoding, frame(index))
        stored = rows[:, :rows.shape[1] - 6].copy().view(expected.dtype).reshape(expected.shape)
        if encoding == "mono16_be":
            assert np.array_equal(stored, expected // 2)  # big-endian values read and written as such
        else:
            assert np.array_equal(stored, expected), topic  # rgb8 stored R,G,B: the B the stand-in cleared is last
        assert (rows[:, -6:] == 7).all()  # row padding kept
    assert "/depth: 3 images copied as recorded: 16UC1: depth or other non-photo data" in caplog.text
    assert not list(target.parent.glob(".*partial*"))  # the staging folder removed


def test_a_real_deblurrer_gives_the_same_pixels_as_on_the_frame_itself(tmp_path, tiny_weights):
    source = make_bag(tmp_path / "drive.bag", topics=(("/camera/image_raw", "rgb8"),), count=2)
    with Deblurrer(tiny_weights) as deblur:
        transcode_bag(source, tmp_path / "out.bag", deblur, progress=False)
        for index, (_, _, _, message, _) in enumerate(read_bag(tmp_path / "out.bag")):
            stored = np.asarray(message.data).reshape(message.height, message.width, 3)
            assert np.array_equal(stored[..., ::-1], deblur(frame(index)))  # RGB in the message, BGR from Deblurrer


@pytest.mark.parametrize("kind,compression", [("ros1", "lz4"), ("ros1", "bz2"), ("sqlite3", "file"),
                                              ("mcap", "message")])
def test_a_compressed_recording_stays_compressed(tmp_path, kind, compression):
    source = make_bag(tmp_path / ("drive.bag" if kind == "ros1" else "drive"), kind, count=2, compression=compression)
    target = tmp_path / "out" / source.name
    target.parent.mkdir()
    transcode_bag(source, target, _no_blue, progress=False)
    if kind == "ros1":  # every chunk record names its compression
        assert target.read_bytes().count(f"compression={compression}".encode()) >= 1
        assert b"compression=none" not in target.read_bytes()
    else:
        metadata = (target / "metadata.yaml").read_text()
        assert f"compression_mode: {compression}" in metadata and "compression_format: zstd" in metadata
    assert len(read_bag(target)) == len(read_bag(source))


def _yaml(text: str):
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def _humble_reads(information: dict) -> list:
    """What ROS 2 Humble's rosbag2 (``metadata_io.cpp``) reads of a bag's metadata: every topic's
    ``offered_qos_profiles`` as a string (``as<std::string>()``) holding profiles whose policies are numbers
    (``Rosbag2QoS``'s ``as<int>()``); anything else is Humble's "yaml-cpp: bad conversion"."""
    profiles = []
    for topic in information["topics_with_message_count"]:
        qos = topic["topic_metadata"]["offered_qos_profiles"]
        assert isinstance(qos, str), f"{topic['topic_metadata']['name']}: QoS {qos!r} is not a string"
        for profile in _yaml(qos) or []:
            assert all(type(profile[k]) is int for k in ("history", "reliability", "durability", "liveliness")), qos
            profiles.append(profile)
    return profiles


@pytest.mark.parametrize("kind", ["sqlite3", "mcap"])
def test_a_humble_recording_comes_back_in_a_format_humble_reads(tmp_path, kind):
    """Before: every ROS 2 bag was written in format 9, whose QoS (mappings with policy names) Humble and Iron
    cannot read: a Humble recording no longer played back on the robot that recorded it."""
    source = humble_bag(tmp_path / "drive", kind)
    target = tmp_path / "out" / "drive"
    target.parent.mkdir()
    transcode_bag(source, target, _no_blue, progress=False)
    information = _yaml((target / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert information["version"] == 8
    assert _humble_reads(information) == _yaml(HUMBLE_QOS) * len(information["topics_with_message_count"])
    assert [m[:3] for m in read_bag(target)] == [m[:3] for m in read_bag(source)]


@pytest.mark.parametrize("suffix", ["db3", "mcap"])
def test_a_bare_storage_file_keeps_its_qos_as_numbers(tmp_path, suffix):
    """A bare file does not say its format: the QoS inside it is written as every ROS 2 release reads it."""
    folder = humble_bag(tmp_path / "folder", "sqlite3" if suffix == "db3" else "mcap")
    [storage] = folder.glob(f"*.{suffix}")
    source = shutil.move(storage, tmp_path / f"drive.{suffix}")
    target = tmp_path / f"out.{suffix}"
    transcode_bag(source, target, _no_blue, progress=False)
    if suffix == "db3":
        import sqlite3

        with contextlib.closing(sqlite3.connect(target)) as db:
            stored = [row[0] for row in db.execute("SELECT offered_qos_profiles FROM topics")]
    else:  # each MCAP channel's metadata holds the same YAML string
        stored = _mcap_channel_qos(target)
    assert len(stored) == len(DEFAULT_TOPICS) and all(_yaml(q) == _yaml(HUMBLE_QOS) for q in stored), stored


def _mcap_channel_qos(path) -> list[str]:
    """The ``offered_qos_profiles`` string of every channel of an MCAP file, as stored."""
    from io import BytesIO

    from rosbags.rosbag2.storage_mcap import McapReader, read_string

    reader = McapReader(path)
    reader.open()
    try:
        stored = []
        for channel in reader.channels.values():
            stream, entries = BytesIO(channel.metadata), {}
            while stream.tell() < len(channel.metadata):
                key = read_string(stream)
                entries[key] = read_string(stream)
            stored.append(entries["offered_qos_profiles"])
        return stored
    finally:
        reader.close()


def test_a_jazzy_recording_stays_in_format_9(tmp_path):
    source = make_bag(tmp_path / "drive", "mcap", count=1, qos=HUMBLE_QOS)
    target = tmp_path / "out" / "drive"
    target.parent.mkdir()
    transcode_bag(source, target, _no_blue, progress=False)
    information = _yaml((target / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert information["version"] == 9
    assert information["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"][0]["history"] == \
        "unknown"


def test_a_failure_leaves_no_output_and_an_old_one_as_it_was(tmp_path):
    source = make_bag(tmp_path / "drive.bag", count=3)
    target = tmp_path / "out.bag"
    target.write_bytes(b"the bag of an earlier run")
    calls = []

    def fails_on_the_second(image):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the network failed")
        return image

    with pytest.raises(RuntimeError, match="the network failed"):
        transcode_bag(source, target, fails_on_the_second, progress=False)
    assert target.read_bytes() == b"the bag of an earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.bag", "out.bag"]


def test_a_damaged_or_tiny_frame_is_kept_as_recorded_and_the_rest_deblurred(tmp_path, caplog):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    image, compressed = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CompressedImage"]
    header = store.types["std_msgs/msg/Header"](seq=0, stamp=store.types["builtin_interfaces/msg/Time"](
        sec=1, nanosec=0), frame_id="camera")
    ok, good = cv2.imencode(".jpg", frame(0))
    messages = [(compressed, compressed(header=header, format="jpeg", data=good.reshape(-1)[:200])),  # cut short
                (compressed, compressed(header=header, format="jpeg", data=good.reshape(-1))),
                (image, image(header=header, height=1, width=1, encoding="rgb8", is_bigendian=0, step=3,
                              data=np.array([1, 2, 3], np.uint8)))]
    with Writer(tmp_path / "drive.bag") as writer:
        topics = {}
        for index, (kind, message) in enumerate(messages):
            topic = "/raw" if kind is image else "/compressed"
            if topic not in topics:
                topics[topic] = writer.add_connection(topic, kind.__msgtype__, typestore=store)
            writer.write(topics[topic], 10 + index, store.serialize_ros1(message, kind.__msgtype__))
    with caplog.at_level(logging.WARNING):
        counts = transcode_bag(tmp_path / "drive.bag", tmp_path / "out.bag", _no_blue, progress=False)
    assert counts == {"/compressed": 1}
    before, after = read_bag(tmp_path / "drive.bag"), read_bag(tmp_path / "out.bag")
    assert after[0][4] == before[0][4] and after[2][4] == before[2][4]  # kept as recorded
    assert after[1][4] != before[1][4]
    assert "/compressed: 1 image copied as recorded: damaged: does not decode" in caplog.text
    assert "/raw: 1 image copied as recorded: image of 1x1 pixels is too small" in caplog.text


def test_topics_named_must_be_image_topics_of_the_bag(tmp_path):
    source = make_bag(tmp_path / "drive.bag", count=1)
    with pytest.raises(BagError, match="has no topic /rear.*its image topics: /camera/image_raw, /camera/image_raw/c"):
        transcode_bag(source, tmp_path / "a.bag", _no_blue, ["/rear"], progress=False)
    with pytest.raises(BagError, match="/imu carries sensor_msgs/msg/Imu, not images"):
        transcode_bag(source, tmp_path / "b.bag", _no_blue, ["/imu"], progress=False)
    imu_only = make_bag(tmp_path / "imu.bag", topics=(("/imu", "imu"),), count=1)
    with pytest.raises(BagError, match="holds no image topics"):
        transcode_bag(imu_only, tmp_path / "c.bag", _no_blue, progress=False)
    only = transcode_bag(source, tmp_path / "d.bag", _no_blue, ["/camera/image_raw"], progress=False)
    assert only == {"/camera/image_raw": 1}
    assert [raw for t, *_, raw in read_bag(tmp_path / "d.bag") if t.endswith("compressed")] == \
        [raw for t, *_, raw in read_bag(source) if t.endswith("compressed")]  # not named: as recorded


def test_command_line(tmp_path, tiny_weights, capsys):
    source = make_bag(tmp_path / "drive.bag", count=2)
    out = tmp_path / "out"
    assert main([str(source), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 0
    assert len(read_bag(out / "drive.bag")) == 6
    assert main([str(source), "-o", str(out), "--model", str(tiny_weights), "-q"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([str(source), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "/camera/image_raw  Image  2 messages  24x32 rgb8  -> deblurred" in listed and "/imu" not in listed
    assert "/camera/image_raw/compressed  CompressedImage  2 messages  format 'bgr8; jpeg compressed bgr8'  -> " \
           "deblurred" in listed
    depth = make_bag(tmp_path / "depth.bag", topics=(("/depth", "16UC1"),), count=1)
    assert main([str(depth), "--list"]) == 0
    assert "/depth  Image  1 messages  24x32 16UC1  -> copied as recorded (16UC1: depth or other non-photo data)" \
        in capsys.readouterr().out
    assert main([str(source), "-o", str(out), "--topics", "/imu", "-q"]) == 1  # before the model is loaded
    assert capsys.readouterr().err.strip() == f"error: {source}: /imu carries sensor_msgs/msg/Imu, not images"


@pytest.mark.parametrize("case", ["not a bag", "corrupt", "inside the input", "twice"])
def test_command_line_refusals_are_one_line_before_any_work(tmp_path, capsys, case):
    folder = make_bag(tmp_path / "drive", "mcap", count=1)
    args = {"not a bag": [str(tmp_path / "notes.txt")],
            "corrupt": [str(tmp_path / "broken.bag")],
            "inside the input": [str(folder), "-o", str(folder)],
            "twice": [str(folder), str(tmp_path / "other" / "drive"), "-o", str(tmp_path / "out")]}[case]
    (tmp_path / "notes.txt").write_text("not a bag")
    (tmp_path / "broken.bag").write_bytes(b"#ROSBAG V2.0\n" + b"\x00" * 64)
    make_bag(tmp_path / "other" / "drive", "mcap", count=1)
    assert main(args + ["-q"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "out").exists() and not (folder / "drive").exists()


def test_the_image_command_points_at_the_bag_command(tmp_path, capsys):
    bag = make_bag(tmp_path / "drive.bag", count=1)
    assert runtime_main([str(bag), "-o", str(tmp_path / "out"), "-q"]) == 1
    assert "is a ROS bag: deblur its camera topics with python -m runtime.rosbag" in capsys.readouterr().err


def test_without_rosbags_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rosbags", None)
    with pytest.raises(BagError, match=r"drive.bag: .*needs rosbags.*pip install 'banet-deploy\[rosbag\]'"):
        require_rosbags("drive.bag")


def test_compressed_frames_follow_the_deblurrers_pixel_limit(tmp_path, caplog):
    """Round 17: --max-megapixels never reached CompressedImage frames (the default 200 MP applied), and a frame
    refused for its size was counted as "damaged: does not decode"."""

    class Limited:
        max_pixels = 500  # the frames are 24x32: over it

        def __call__(self, image):
            return _no_blue(image)

    source = make_bag(tmp_path / "drive.bag", "ros1", topics=(("/camera/image_raw/compressed", "jpeg"),))
    target = tmp_path / "out" / source.name
    target.parent.mkdir()
    with caplog.at_level(logging.WARNING):
        counts = transcode_bag(source, target, Limited(), progress=False)
    assert not counts.get("/camera/image_raw/compressed")
    assert "over the pixel limit (--max-megapixels)" in caplog.text and "damaged" not in caplog.text


def test_list_follows_topics(tmp_path, capsys):
    """Round 17: --list ignored --topics: a topic the run would copy was listed "-> deblurred", and one the bag lacks
    (refused by the run) was listed without a word, exit 0."""
    source = make_bag(tmp_path / "drive.bag", count=1)
    assert main([str(source), "--list", "--topics", "/camera/image_raw"]) == 0
    listed = capsys.readouterr().out
    assert "/camera/image_raw  Image  1 messages  24x32 rgb8  -> deblurred" in listed
    assert "/camera/image_raw/compressed  CompressedImage" in listed and "(not in --topics)" in listed
    assert main([str(source), "--list", "--topics", "/nope"]) == 1
    assert "has no topic /nope" in capsys.readouterr().err


def test_output_and_duplicate_bags_are_said_in_plain_words(tmp_path, tiny_weights, capsys):
    """Round 17: ``-o a.png`` (a file) said "[Errno 17] File exists: 'a.png'"; one bag given twice
    (drive.bag ./drive.bag) was refused as "two bags have the same name"."""
    source = make_bag(tmp_path / "drive.bag", count=1)
    (tmp_path / "a.png").write_bytes(b"the user's file")
    assert main([str(source), "-o", str(tmp_path / "a.png"), "--model", str(tiny_weights), "-q"]) == 1
    assert f"cannot create the output folder {tmp_path / 'a.png'}: {tmp_path / 'a.png'} is a file, not a folder" \
        in capsys.readouterr().err
    twice = [str(source), str(tmp_path / "." / "drive.bag")]
    assert main([*twice, "-o", str(tmp_path / "out"), "--model", str(tiny_weights), "-q"]) == 0
    assert "deblurred 1 of 1 bag(s)" in capsys.readouterr().out
