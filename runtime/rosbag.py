"""Robot recordings: the camera topics of a ROS bag deblurred into a new bag, every other message copied unchanged.

Why: robots record what their cameras saw, with everything else they sensed and did, in ROS bags; a motion-blurred
camera topic is deblurred where it is replayed, evaluated or labelled, which needs a bag that is the same recording
with sharper pictures: the same topics, types, message definitions, QoS and timestamps, every other message byte for
byte. Read and written with rosbags (pure Python, no ROS installation: the ``rosbag`` extra): ROS 1 ``.bag`` files,
ROS 2 bags (a folder holding ``metadata.yaml``; SQLite 3 or MCAP storage, kept) and bare ROS 2 ``.mcap`` or
``.db3`` files, each written as what it was. A ROS 2 bag is written in rosbag2 format 9 only where it was 9 (Jazzy
and later), else in 8, which every ROS 2 release reads (:func:`rosbag2_version`): Humble and Iron cannot read 9. The
output is written under a temporary name in its folder and renamed into place when whole.

Deblurred: ``sensor_msgs/Image`` in the photo encodings (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` and
their 16-bit forms; alpha, byte order and row padding kept) and ``sensor_msgs/CompressedImage`` in JPEG or PNG
(written back in its own format, JPEG at quality 95). Copied as recorded, counted in one warning per topic: depth
and other non-photo encodings (``16UC1``, ``32FC1``, ``compressedDepth``), raw Bayer mosaics (debayer them first)
and YUV, and frames that do not decode or that the network cannot take (one damaged frame does not fail a
recording). The messages' headers (stamp, frame id) are those recorded: a deblurred frame describes the same
instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from banet.cli_types import path_arg
from banet.errors import first_line
from banet.outputs import commit_partial, file_in_the_way, make_folder
from banet.processing import ImageFormatError
from banet.shapes import hw_text
from runtime.images import DEFAULT_MAX_PIXELS, ImageReadError, PixelLimitError, decode_image, encode_image

log = logging.getLogger(__name__)

ROSBAG_HINT = "pip install 'banet-deploy[rosbag]' (rosbags)"
#: Image encodings deblurred: (channels, bits, the channel order that turns them into BGR(A), as Deblurrer takes).
PHOTO_ENCODINGS = {
    "bgr8": (3, 8, None), "rgb8": (3, 8, [2, 1, 0]), "bgra8": (4, 8, None), "rgba8": (4, 8, [2, 1, 0, 3]),
    "mono8": (1, 8, None), "bgr16": (3, 16, None), "rgb16": (3, 16, [2, 1, 0]), "bgra16": (4, 16, None),
    "rgba16": (4, 16, [2, 1, 0, 3]), "mono16": (1, 16, None),
}
_IMAGE_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/Image"}
_COMPRESSED_TYPES = {"sensor_msgs/msg/CompressedImage", "sensor_msgs/CompressedImage"}
#: CompressedImage formats written back in kind: the suffix the encoder takes.
_COMPRESSED_FORMATS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


class BagError(OSError):
    """A bag that cannot be read or written, or options that do not fit it; the message names the bag."""


#: Bag files by extension: ROS 1 bags, ROS 2 storage files read without their folder.
BAG_SUFFIXES = (".bag", ".mcap", ".db3")


def is_rosbag(path: Path) -> bool:
    """Whether ``path`` is a bag file (:data:`BAG_SUFFIXES`) or a ROS 2 bag folder (holding ``metadata.yaml``)."""
    return (path.suffix.lower() in BAG_SUFFIXES and path.is_file()) or (path / "metadata.yaml").is_file()


def require_rosbags(what: str):
    """The ``rosbags`` package, or a :class:`BagError` naming the extra to install."""
    try:
        import rosbags
        import rosbags.highlevel  # noqa: F401  (the readers and writers are submodules)
    except ImportError:
        raise BagError(f"{what}: reading ROS bags needs rosbags, which is not installed: {ROSBAG_HINT}") from None
    return rosbags


def transcode_bag(source: str | Path, target: str | Path, deblur: Callable[[np.ndarray], np.ndarray],
                  topics: Sequence[str] | None = None, progress: bool = True) -> dict[str, int]:
    """Write ``target``, a bag of ``source``'s kind, with the images of ``topics`` (default: every image topic)
    passed through ``deblur`` (a BGR(A) or grey array in, the same out) and every other message copied; returns
    how many messages of each topic were deblurred. ``target`` is replaced whole, or left as it was on any
    failure."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import WriterError as Writer1Error
    from rosbags.rosbag2 import WriterError as Writer2Error
    from rosbags.serde import SerdeError

    source, target = Path(source), Path(target)
    _check_target(source, target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        with _opened(source) as reader:
            chosen = _chosen_topics(source, reader, topics)
            bare = source.is_file() and source.suffix.lower() != ".bag"  # a ROS 2 storage file without its folder
            written = staging / (Path(target.name).stem if bare else target.name)
            counts = _copy(reader, _writer(source, written, reader), source, chosen, deblur, progress)
        _commit(source, written, target)
    except (AnyReaderError, SerdeError, Writer1Error, Writer2Error) as exc:
        raise BagError(f"{source}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _check_target(source: Path, target: Path) -> None:
    """Refuse, before any work, a ``target`` that is ``source`` (links and hard links too) or lies inside it, one
    that holds ``source``, and an existing one that is not a bag of ``source``'s form (a ROS 2 bag is written by
    replacing the folder ``target`` whole). Before, the API wrote the deblurred bag over the recording it read, and
    ``transcode_bag("data/run1", "data")`` deleted ``data/`` with the recording and everything else in it."""
    from banet.outputs import same_file

    inside = source.is_dir() and target.resolve().is_relative_to(source.resolve())
    if same_file(target, source) or inside:
        raise BagError(f"{target}: is the bag being read ({source}), or inside it; give the output another path "
                       "(it would be written over)")
    if source.resolve().is_relative_to(target.resolve()):
        raise BagError(f"{target}: holds the bag being read ({source}); give the output bag's own path, not a folder "
                       "above it (it would be replaced whole)")
    if source.is_dir() and target.exists() and not (target / "metadata.yaml").is_file():
        raise BagError(f"{target}: exists and is not a ROS 2 bag folder; give the output bag's own path (a ROS 2 bag "
                       "is written by replacing its folder whole, with everything in it)")
    if not source.is_dir() and target.is_dir():
        raise BagError(f"{target}: is a folder; give the output bag's file name")


def _copy(reader, writer, source: Path, chosen: set[str], deblur: Callable[[np.ndarray], np.ndarray],
          progress: bool) -> dict[str, int]:
    """Every message of ``reader`` written by ``writer`` at its timestamp, the images of ``chosen`` topics
    deblurred; how many were, by topic (those left as recorded are counted in one warning per topic)."""
    from tqdm import tqdm

    deblurred: Counter[str] = Counter()
    copied: dict[str, Counter[str]] = {}
    with writer:
        connections = {c.id: _connection(writer, c, reader) for c in reader.connections}
        with tqdm(total=reader.message_count, desc=source.name, unit="msg", disable=not progress) as bar:
            for connection, timestamp, data in reader.messages():
                if connection.topic in chosen:
                    data, why = _deblurred(reader, connection, data, deblur, source)
                    if why is None:
                        deblurred[connection.topic] += 1
                    else:
                        copied.setdefault(connection.topic, Counter())[why] += 1
                writer.write(connections[connection.id], timestamp, data)
                bar.update()
    for topic, reasons in copied.items():
        why = "; ".join(f"{why} ({n})" if len(reasons) > 1 else why for why, n in reasons.most_common())
        log.warning("%s: %s: %s copied as recorded: %s", source, topic, _count(sum(reasons.values()), "image"), why)
    return dict(deblurred)


def _writer(source: Path, path: Path, reader):
    """A rosbags writer of ``source``'s kind at ``path`` (ROS 2: a folder, with ``source``'s storage), compressed
    as ``source`` is (ROS 1: bz2 or lz4 chunks; ROS 2 folders: zstd files or messages): a compressed recording
    written uncompressed would take several times its disk space."""
    [bag] = reader.readers
    if not reader.is2:
        from rosbags.rosbag1 import Writer
        from rosbags.rosbag1.reader import decompressors

        writer = Writer(path)
        used = {name for name, function in decompressors.items() for chunk in bag.chunks.values()
                if chunk.decompressor is function} - {"none"}
        if used:  # a bag's chunks share one compression; bz2 where mixed (the smaller)
            writer.set_compression(Writer.CompressionFormat["BZ2" if "bz2" in used else "LZ4"])
        return writer
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    mcap = source.suffix.lower() == ".mcap" or (source.is_dir() and any(source.glob("*.mcap*")))
    writer = Writer(path, version=rosbag2_version(source),
                    storage_plugin=StoragePlugin.MCAP if mcap else StoragePlugin.SQLITE3)
    if source.is_dir() and bag.compression_mode in ("file", "message"):
        writer.set_compression(CompressionMode[bag.compression_mode.upper()], CompressionFormat.ZSTD)
    for key, value in _custom_data(bag).items():  # before: dropped
        writer.set_custom_data(key, value)
    return writer


def _custom_data(bag) -> dict[str, str]:
    """The ``custom_data`` of a ROS 2 bag's ``metadata.yaml`` (``ros2 bag record --custom-data``: a robot's name, a
    run's id), as strings, which rosbag2 holds (YAML reads a hand-edited ``run: 42`` as a number); {} where none."""
    custom = getattr(getattr(getattr(bag, "storage", None), "metadata", None), "custom", None)
    if not isinstance(custom, dict):
        return {}
    return {str(key): value if isinstance(value, str) else "" if value is None else str(value)
            for key, value in custom.items()}


def rosbag2_version(source: Path) -> int:
    """The rosbag2 format a copy of ROS 2 bag ``source`` is written in: 9 where its ``metadata.yaml`` says 9 or
    later, else 8.

    Why: format 9 (Jazzy and later) writes each topic's QoS as YAML mappings with policy names; Humble and Iron
    read ``offered_qos_profiles`` as a string of numbers (rosbag2's ``metadata_io``/``yaml.hpp``) and fail on a 9
    bag ("yaml-cpp: bad conversion"), so a Humble recording written as 9 no longer played where it was recorded.
    Format 8 holds the same QoS as that string, and Jazzy and later read it too (they detect the numbers). A bare
    storage file does not say its format: it gets 8, which every release reads.
    """
    if not source.is_dir():
        return 8
    from ruamel.yaml import YAML, YAMLError

    try:
        information = YAML(typ="safe").load((source / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        version = int(information["version"])
    except (OSError, YAMLError, KeyError, TypeError, ValueError):  # rosbags read it already: not expected
        return 8
    return 9 if version >= 9 else 8


def _connection(writer, connection, reader):
    """``connection`` added to ``writer``: the same topic, type and definition, and (ROS 1) caller id and latching,
    (ROS 2) serialization format and QoS; a ROS 2 bag that recorded no definition gets the reader's types'."""
    ext = connection.ext
    if hasattr(ext, "callerid"):
        return writer.add_connection(connection.topic, connection.msgtype, msgdef=connection.msgdef.data,
                                     md5sum=connection.digest, callerid=ext.callerid, latching=ext.latching)
    known = {"msgdef": connection.msgdef.data, "rihs01": connection.digest} if connection.msgdef.data and \
        connection.digest else {"typestore": reader.typestore}
    return writer.add_connection(connection.topic, connection.msgtype, serialization_format=ext.serialization_format,
                                 offered_qos_profiles=ext.offered_qos_profiles, **known)


def _commit(source: Path, written: Path, target: Path) -> None:
    """Move the whole bag ``written`` into place at ``target``: a file (a ROS 1 bag; a bare storage file, taken out
    of the folder rosbags wrote around it) renamed over ``target``; a ROS 2 folder swapped with the old one."""
    if source.is_file():
        if written.is_dir():  # a rosbag2 folder: its one storage file is the output
            [written] = [p for p in written.iterdir() if p.suffix in (".mcap", ".db3")]
        commit_partial(written, target)
        return
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        os.replace(target, old)
    os.replace(written, target)
    if old is not None:
        shutil.rmtree(old)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


@contextlib.contextmanager
def _opened(source: Path) -> Iterator:
    """``source`` open in an AnyReader; one line (:class:`BagError`) for a path that is not a bag it can read."""
    require_rosbags(str(source))
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    if not source.exists():
        raise BagError(f"{source}: no such file or folder")
    if not is_rosbag(source):
        raise BagError(f"{source}: not a ROS bag (a .bag, .mcap or .db3 file, or a ROS 2 bag folder holding "
                       "metadata.yaml)")
    # Message definitions recorded in the bag come first; bags without them (ROS 2 SQLite bags before Iron) are read
    # with the latest ROS 2 types.
    reader = AnyReader([source], default_typestore=get_typestore(Stores.LATEST))
    try:
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f"{source}: not a bag rosbags can read ({first_line(exc)})") from None
    try:
        yield reader
    finally:
        reader.close()


def _chosen_topics(source: Path, reader, topics: Sequence[str] | None) -> set[str]:
    """The image topics to deblur: ``topics``, each of which must be an image topic of the bag, or all of them."""
    images = {c.topic for c in reader.connections if c.msgtype in _IMAGE_TYPES | _COMPRESSED_TYPES}
    if topics is None:
        if not images:
            raise BagError(f"{source}: holds no image topics (sensor_msgs Image or CompressedImage); nothing to deblur")
        return images
    every = {c.topic: c.msgtype for c in reader.connections}
    for topic in topics:
        if topic not in every:
            raise BagError(f"{source}: has no topic {topic} (its image topics: {', '.join(sorted(images)) or 'none'})")
        if topic not in images:
            raise BagError(f"{source}: {topic} carries {every[topic]}, not images")
    return set(topics)


def _deblurred(reader, connection, data, deblur: Callable[[np.ndarray], np.ndarray], source: Path
               ) -> tuple[bytes, str | None]:
    """(the message's bytes with its image deblurred, None), or (its bytes as recorded, why not)."""
    message = reader.deserialize(data, connection.msgtype)
    name = f"{source}: {connection.topic}"
    try:
        if connection.msgtype in _COMPRESSED_TYPES:
            new, why = _deblurred_compressed(message, deblur, name)
        else:
            new, why = _deblurred_raw(message, deblur)
    except PixelLimitError:  # over --max-megapixels: kept as it is, and said so (it was called "damaged")
        new, why = None, "over the pixel limit (--max-megapixels)"
    except ImageReadError:  # one damaged frame of a long recording: kept as it is, as players skip it
        new, why = None, "damaged: does not decode"
    except ImageFormatError as exc:  # a frame the network cannot take (too small): kept as it is
        new, why = None, first_line(exc)
    if why is not None:
        return data, why
    typestore = reader.typestore
    if not reader.is2:
        return typestore.serialize_ros1(new, connection.msgtype), None
    return typestore.serialize_cdr(new, connection.msgtype, little_endian=bytes(data[1:2]) != b"\x00"), None


def _deblurred_raw(message, deblur: Callable[[np.ndarray], np.ndarray]):
    """An ``Image`` message with its pixels deblurred (encoding, byte order and row padding kept), or why not."""
    why = _raw_refusal(message.encoding)
    if why is not None:
        return None, why
    encoding = message.encoding.lower()
    channels, bits, order = PHOTO_ENCODINGS[encoding]
    dtype = np.dtype(f"{'>' if message.is_bigendian else '<'}u{bits // 8}")
    row = message.width * channels * dtype.itemsize
    if message.step < row or len(message.data) < message.step * message.height:
        return None, f"{hw_text(message.height, message.width)} {encoding} in {len(message.data)} bytes, step " \
                     f"{message.step}: not a whole image"
    rows = np.asarray(message.data, np.uint8)[:message.step * message.height].reshape(message.height, message.step)
    pixels = rows[:, :row].copy().view(dtype).reshape(message.height, message.width, channels)
    pixels = pixels.astype(dtype.newbyteorder("="))
    pixels = pixels[..., 0] if channels == 1 else pixels[..., order] if order else pixels
    out = deblur(np.ascontiguousarray(pixels))
    out = out[..., order] if order else out  # back to the message's order (each permutation is its own inverse)
    out = out.reshape(message.height, message.width, channels).astype(dtype)
    rows = rows.copy()
    rows[:, :row] = out.view(np.uint8).reshape(message.height, row)
    return dataclasses.replace(message, data=rows.reshape(-1)), None


def _not_a_photo(encoding: str) -> str:
    """Why an image encoding is not deblurred, in a few words."""
    lower = encoding.lower()
    if lower.startswith("bayer_"):
        return f"{encoding}: a raw Bayer mosaic; debayer it first"
    if lower.startswith(("8u", "8s", "16u", "16s", "32s", "32f", "64f")):
        return f"{encoding}: depth or other non-photo data"
    return f"{encoding}: not a photo encoding deblurred here"


def _compressed_suffix(fmt: str) -> tuple[str | None, str | None]:
    """(the encoder's suffix, None) for a ``CompressedImage`` format deblurred here ("jpeg", "rgb8; jpeg compressed
    bgr8", "png"), else (None, why not)."""
    kind = fmt.lower().split(";")[-1].split()[0] if fmt.strip() else ""
    if "compresseddepth" in fmt.lower():
        return None, f"{fmt}: compressed depth"
    if kind not in _COMPRESSED_FORMATS:
        return None, f"{fmt or 'no format'}: not JPEG or PNG"
    return _COMPRESSED_FORMATS[kind], None


def _raw_refusal(encoding: str) -> str | None:
    """Why an ``Image`` encoding is not deblurred (:func:`_not_a_photo`), None where it is."""
    return None if encoding.lower() in PHOTO_ENCODINGS else _not_a_photo(encoding)


def _deblurred_compressed(message, deblur: Callable[[np.ndarray], np.ndarray], name: str):
    """A ``CompressedImage`` message (JPEG or PNG) with its picture deblurred and encoded anew in its format, or why
    not."""
    suffix, why = _compressed_suffix(message.format)
    if why is not None:
        return None, why
    # under the Deblurrer's own pixel limit (--max-megapixels): the default one applied whatever was asked
    limit = getattr(deblur, "max_pixels", DEFAULT_MAX_PIXELS)
    pixels, _ = decode_image(bytes(message.data), name, max_pixels=limit, metadata=False)
    encoded = encode_image(deblur(pixels), suffix, name)
    return dataclasses.replace(message, data=np.frombuffer(encoded, np.uint8)), None


def build_parser():
    import argparse

    from runtime.options import add_model_options

    parser = argparse.ArgumentParser(
        prog="python -m runtime.rosbag", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\nExamples:\n"
        "    python -m runtime.rosbag drive.bag                      # -> deblurred/drive.bag\n"
        "    python -m runtime.rosbag rosbag2_2026_12_05/ -o out/    # a ROS 2 bag folder -> out/rosbag2_2026_12_05/\n"
        "    python -m runtime.rosbag drive.mcap --topics /camera/front/image_raw --precision int8\n"
        "    python -m runtime.rosbag drive.bag --list               # its image topics: deblurred or copied\n\n"
        "Every image topic is deblurred unless --topics names some; every other message is copied byte for byte,\n"
        "at its recorded time. An output is replaced only with --force, never when it is an input.")
    parser.add_argument("bags", type=path_arg, nargs="+", help="ROS bags: .bag, .mcap or .db3 files, ROS 2 bag folders")
    parser.add_argument("--output", "-o", type=path_arg, default=Path("deblurred"),
                        help="output folder; each bag is written there under its own name (default: deblurred)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="the image topics to deblur (default: every Image and CompressedImage topic)")
    parser.add_argument("--list", action="store_true",
                        help="list each bag's image topics: message count, size and encoding (or format), and whether "
                             "they would be deblurred or copied as recorded; nothing is deblurred or written")
    add_model_options(parser)
    parser.add_argument("--force", action="store_true", help="replace existing output bags")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or per-bag lines: only errors, warnings and the closing count")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status: 0 all deblurred, 1 any failure, 130 interrupted (Ctrl-C), 143 or 129
    terminated (SIGTERM, SIGHUP: :mod:`runtime.stop_signals`)."""
    from runtime.stop_signals import run_stoppable

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    return run_stoppable(lambda: _one_line_errors(args), "the bag in progress was not written")


def _one_line_errors(args) -> int:
    """:func:`_run`, a bag, folder or option that cannot work being one ``error:`` line (exit 1), never a traceback."""
    try:
        return _run(args)
    except Exception as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from runtime import Deblurrer
    from runtime.options import deblurrer_options

    if args.list:  # each bag opened once: one that rosbags cannot read is refused there
        for bag in args.bags:
            lines = listing(bag, args.topics)
            print(f"{bag}:")
            for line in lines:
                print(f"  {line}")
        return 0
    for bag in args.bags:  # a path that is not a bag rosbags reads, or a topic it lacks, refused before any work
        with _opened(bag) as reader:
            _chosen_topics(bag, reader, args.topics)
    given: dict[str, Path] = {}
    for bag in args.bags:  # one bag given twice (drive.bag ./drive.bag): deblurred once, as python -m runtime does
        given.setdefault(os.path.realpath(bag), bag)
    args.bags = list(given.values())
    targets = _plan(args.bags, args.output, args.force)
    try:  # removed at exit if nothing was written into it
        make_folder(args.output)
    except OSError as exc:  # "[Errno 17] File exists: 'a.png'" before
        raise BagError(f"cannot create the output folder {args.output}: "
                       f"{file_in_the_way(args.output / 'x') or exc.strerror or exc}") from None
    failures = 0
    with Deblurrer(**deblurrer_options(args)) as deblurrer:
        log.info("model: %s on %s", deblurrer.model_path, deblurrer.backend.describe())
        for bag, target in zip(args.bags, targets):
            try:
                counts = transcode_bag(bag, target, deblurrer, args.topics, progress=not args.quiet)
            except (OSError, ValueError, RuntimeError) as exc:  # one bag's failure never stops the others
                log.debug("%s failed", bag, exc_info=True)
                failures += 1
                print(f"error: {first_line(exc)}", file=sys.stderr)
                continue
            log.info("%s -> %s (%s)", bag, target, ", ".join(f"{topic}: {n}" for topic, n in counts.items())
                     or "no image deblurred")
    print(f"deblurred {len(targets) - failures} of {len(targets)} bag(s) into {args.output}")
    return 1 if failures else 0


def listing(source: Path, topics: Sequence[str] | None = None) -> list[str]:
    """One line per image topic of ``source``: its type, message count and what its first message holds (size and
    encoding, or format), and whether it would be deblurred or copied as recorded (and why): with ``topics``
    (--topics) the others are copied, and a topic the bag lacks is refused, as the run itself does."""
    with _opened(source) as reader:
        chosen = _chosen_topics(source, reader, topics) if topics is not None else None
        images = [c for c in reader.connections if c.msgtype in _IMAGE_TYPES | _COMPRESSED_TYPES]
        counts, first, topics = Counter(), {}, {c.topic for c in images}
        for c in images:
            counts[(c.topic, c.msgtype)] += c.msgcount
        for connection, _, data in reader.messages(connections=images):  # the first message of each topic
            first.setdefault(connection.topic, reader.deserialize(data, connection.msgtype))
            if len(first) == len(topics):
                break
    lines = []
    for (topic, msgtype), n in sorted(counts.items()):
        message = first.get(topic)
        if message is None:
            holds, why = "no messages", None
        elif msgtype in _COMPRESSED_TYPES:
            holds, (_, why) = f"format {message.format!r}", _compressed_suffix(message.format)
        else:
            holds, why = f"{hw_text(message.height, message.width)} {message.encoding}", _raw_refusal(message.encoding)
        if why is None and chosen is not None and topic not in chosen:
            why = "not in --topics"
        verdict = "deblurred" if why is None else f"copied as recorded ({why})"
        lines.append(f"{topic}  {msgtype.rsplit('/', 1)[-1]}  {n} messages  {holds}  -> {verdict}")
    return lines


def _plan(bags: list[Path], output: Path, force: bool) -> list[Path]:
    """Each bag's output (``output`` / its name), refused before any work: two bags of one name, an output that is
    a bag given or lies inside one, an existing output without ``force``."""
    from banet.outputs import same_file

    targets = [output / bag.resolve().name for bag in bags]
    if len(set(targets)) < len(targets):
        raise BagError("two bags have the same name and would be written to one output; give them separately with "
                       "different --output folders")
    for target in targets:
        if any(same_file(target, b) or target.resolve().is_relative_to(b.resolve()) for b in bags if b.exists()):
            raise BagError(f"{target} is a bag given, or inside one; choose another --output folder (never "
                           "overwritten, even with --force)")
        if target.exists() and not force:
            raise BagError(f"{target} exists; pass --force to replace it")
    return targets


if __name__ == "__main__":
    raise SystemExit(main())
