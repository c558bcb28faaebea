"""Small ROS bags as robots record them (written with rosbags): camera topics, raw and compressed, beside others."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: (topic, kind) of the bags made here: kind is an Image encoding, "jpeg" or "png" (CompressedImage), or "imu".
DEFAULT_TOPICS = (("/camera/image_raw", "rgb8"), ("/camera/image_raw/compressed", "jpeg"), ("/imu", "imu"))


def frame(index: int, h: int = 24, w: int = 32) -> np.ndarray:
    """The BGR picture of message ``index``: a crop of a real photo (JPEG compresses it as it does camera frames),
    a different one for every message."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[100 + 4 * index:100 + 4 * index + h, 200:200 + w, ::-1])


def _typestore(ros1: bool):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)


def _message(store, ros1: bool, kind: str, index: int, stamp: int, h: int, w: int, step_pad: int = 0):
    """(type, message) number ``index`` of a topic of ``kind``, stamped ``stamp`` (ns)."""
    types = store.types
    time = types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    header = types["std_msgs/msg/Header"](**({"seq": index} if ros1 else {}), stamp=time, frame_id="camera")
    if kind == "imu":
        vector, covariance = types["geometry_msgs/msg/Vector3"], np.arange(9, dtype=np.float64)
        return "sensor_msgs/msg/Imu", types["sensor_msgs/msg/Imu"](
            header=header, orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            orientation_covariance=covariance, angular_velocity=vector(x=0.1, y=0.2, z=float(index)),
            angular_velocity_covariance=covariance, linear_acceleration=vector(x=0.0, y=9.81, z=0.0),
            linear_acceleration_covariance=covariance)
    bgr = frame(index, h, w)
    if kind in ("jpeg", "png"):
        ok, encoded = cv2.imencode(".jpg" if kind == "jpeg" else ".png", bgr)
        fmt = "bgr8; jpeg compressed bgr8" if kind == "jpeg" else "png"
        return "sensor_msgs/msg/CompressedImage", types["sensor_msgs/msg/CompressedImage"](
            header=header, format=fmt, data=encoded.reshape(-1))
    pixels = pixels_for(kind, bgr)
    row = pixels.shape[1] * pixels.shape[2] * pixels.dtype.itemsize
    rows = np.zeros((h, row + step_pad), np.uint8)
    rows[:, :row] = pixels.view(np.uint8).reshape(h, row)
    rows[:, row:] = 7  # padding bytes, to be kept
    return "sensor_msgs/msg/Image", types["sensor_msgs/msg/Image"](
        header=header, height=h, width=w, encoding=kind.removesuffix("_be"),
        is_bigendian=int(pixels.dtype.byteorder == ">"), step=row + step_pad, data=rows.reshape(-1))


def pixels_for(encoding: str, bgr: np.ndarray) -> np.ndarray:
    """``bgr`` (uint8) as an Image message of ``encoding`` stores it: HxWxC in the encoding's channel order and
    type (16-bit: big-endian where the encoding name ends in "_be", a convention of these tests)."""
    base = encoding.removesuffix("_be")
    if base.endswith("16"):
        values = bgr.astype(np.uint16) * 257
        dtype = np.dtype(">u2") if encoding.endswith("_be") else np.dtype("<u2")
    else:
        values, dtype = bgr, np.dtype(np.uint8)
    if base.startswith("rgb"):
        values = values[..., ::-1]
    if base.startswith(("rgba", "bgra")):
        values = np.concatenate([values[..., :3] if base.startswith("bgra") else values,
                                 np.full(values.shape[:2] + (1,), 200, values.dtype)], axis=2)
    if base.startswith("mono") or base in ("16uc1", "32fc1"):
        values = values[..., :1]
    if base == "32fc1":
        return (values / 255.0).astype(np.float32)
    return np.ascontiguousarray(values).astype(dtype)


def make_bag(path: Path, kind: str = "ros1", topics=DEFAULT_TOPICS, count: int = 3, h: int = 24, w: int = 32,
             step_pad: int = 0, compression: str | None = None, version: int = 9, qos: str = "") -> Path:
    """A bag at ``path`` ("ros1": a .bag file; "mcap"/"sqlite3": a ROS 2 folder) with ``count`` messages on each of
    ``topics``, 100 ms apart, interleaved as recorded; ``compression``: ROS 1 "bz2" or "lz4" chunks, ROS 2 "file"
    or "message" zstd; ROS 2: rosbag2 format ``version`` (8 or 9), every topic offering ``qos`` (a profile list
    as Humble records it, e.g. :data:`HUMBLE_QOS`)."""
    ros1 = kind == "ros1"
    store = _typestore(ros1)
    if ros1:
        from rosbags.rosbag1 import Writer

        writer = Writer(path)
        if compression:
            writer.set_compression(Writer.CompressionFormat[compression.upper()])
    else:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        writer = Writer(path, version=version,
                        storage_plugin=StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
        if compression:
            writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    with writer:
        connections = {}
        for index in range(count):
            for topic, encoding in topics:
                stamp = 1_700_000_000 * 10**9 + index * 100_000_000
                msgtype, message = _message(store, ros1, encoding, index, stamp, h, w, step_pad)
                if topic not in connections:
                    offered = {} if ros1 else {"offered_qos_profiles": parse_qos(qos)}
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store, **offered)
                data = store.serialize_ros1(message, msgtype) if ros1 else store.serialize_cdr(message, msgtype)
                writer.write(connections[topic], stamp, data)
    return path


#: The QoS profile a Humble recorder stores for a sensor topic (rosbag2 format 4-8: a YAML string of numbers).
HUMBLE_QOS = ("- history: 3\n  depth: 0\n  reliability: 2\n  durability: 2\n  deadline:\n    sec: 9223372036\n"
              "    nsec: 854775807\n  lifespan:\n    sec: 9223372036\n    nsec: 854775807\n  liveliness: 1\n"
              "  liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n"
              "  avoid_ros_namespace_conventions: false")


def parse_qos(text: str) -> list:
    from rosbags.rosbag2.metadata import parse_qos as parse

    return parse(text)


def humble_bag(path: Path, kind: str = "sqlite3", **options) -> Path:
    """A ROS 2 bag folder as ROS 2 Humble records it: ``metadata.yaml`` in format 5 (no ``custom_data``,
    ``ros_distro`` or type hashes), every topic offering :data:`HUMBLE_QOS`."""
    from ruamel.yaml import YAML

    make_bag(path, kind, version=8, qos=HUMBLE_QOS, **options)
    yaml = YAML(typ="safe")
    document = yaml.load((path / "metadata.yaml").read_text())
    information = document["rosbag2_bagfile_information"]
    information["version"] = 5
    for key in ("custom_data", "ros_distro"):
        information.pop(key)
    for topic in information["topics_with_message_count"]:
        topic["topic_metadata"].pop("type_description_hash")
        topic["topic_metadata"]["offered_qos_profiles"] = HUMBLE_QOS  # in Humble's own layout
    with (path / "metadata.yaml").open("w") as stream:
        yaml.dump(document, stream)
    return path


def read_bag(path: Path) -> list[tuple[str, str, int, object, bytes]]:
    """Every message of a bag: (topic, type, timestamp, message, raw bytes), in order."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([path], default_typestore=get_typestore(Stores.LATEST)) as reader:
        return [(c.topic, c.msgtype, t, reader.deserialize(data, c.msgtype), bytes(data))
                for c, t, data in reader.messages()]
