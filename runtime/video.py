"""A video file through a per-frame function into a video that keeps the source's sound, timing and look, in the
source's container where it is one written here (MP4, QuickTime, Matroska: :data:`CONTAINERS`), else in MP4.

Read and written with PyAV (FFmpeg's libraries in one wheel, the ``video`` extra), which reads every container and
codec FFmpeg knows and, unlike OpenCV's writer, can carry sound:

- frames are turned upright as FFmpeg's player shows them (a phone's portrait clip is stored sideways with a
  display rotation, as photos carry an EXIF orientation; a mirrored display matrix is mirrored back) and given to
  the function as BGR uint8 arrays, as images are; non-square pixels (anamorphic camcorder footage) stay so;
- they are written as H.264 (libx264 at CRF 18, visually lossless, so the encoder does not undo the deblurring;
  OpenCV's writer, used before, had only MPEG-4 part 2) or, from 10-bit sources, 10-bit HEVC, 4:2:0, each at its
  own presentation time (variable frame rates stay as recorded); a frame of an odd height or width is padded by
  one repeated row/column (4:2:0 stores even sizes only), logged once; a frame whose size differs from the first
  (a stream that changes resolution) is scaled to fit that size, its shape kept (letterboxed), logged once;
- every audio stream is copied packet for packet where the output's container carries its codec (PCM in MOV and
  Matroska, not in MP4), else re-encoded to AAC, its language and title kept, as the video stream's are; every tag
  of the container is kept (creation time, location, title, a phone's make, model, local capture time and location
  with altitude, any other key), except those that would be false about the output
  (:data:`runtime.video_encoding.STALE_TAGS`); so are subtitle and data streams the container can hold (in
  Matroska every subtitle as it was), and the timecode (:mod:`runtime.video_streams`); other streams are not (a
  warning names them);
- a packet the decoder refuses as damaged is skipped, as players skip it (logged, with a count); a file that
  stops well before the duration its header declares (a cut recording) is written as far as it goes (logged);
  a file whose only picture is a still one (an audio file's cover art, an image under a video's name) is refused;
- the file is written under a temporary name created new (never through a link), synced and renamed into place
  only when complete (:mod:`banet.outputs`): a failure or Ctrl-C leaves no partial video under the output's name.

This module reads and orchestrates; :mod:`runtime.video_frames` turns frames upright, :mod:`runtime.video_encoding`
writes the output's video and sound, :mod:`runtime.video_streams` its subtitles, data tracks and timecode.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from banet.outputs import commit_partial, create_partial, entry_id, partial_path, remove_if_ours, same_file, write_error
from runtime.video_encoding import (
    Sound,
    VideoEncoder,
    container_name,
    ffmpeg_reason,
    keep_stream_tags,
    kept_tags,
)
from runtime.video_frames import upright
from runtime.video_streams import Carried, codec_name

log = logging.getLogger(__name__)

VIDEO_HINT = "pip install 'banet-deploy[video]' (PyAV)"
#: How much shorter (seconds) than its header declares a video must stop, at least, to be reported as cut short.
_SHORT_BY = 0.5
#: The containers a video keeps, by its extension in lower case: FFmpeg's muxer for each. Every other video (AVI,
#: MPEG-TS, 3GP, WebM, whose VP9 or AV1 is not encoded here...) is written as MP4, under ``.mp4``.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_MP4_SUFFIX = ".mp4"
#: The MP4 and MOV muxers' option that writes every container tag, each as a QuickTime "mdta" key (as phones write
#: theirs); Matroska's tags are free-form, each written as it is.
_EVERY_TAG = {"movflags": "use_metadata_tags"}
_MDTA_MUXERS = frozenset({"mp4", "mov"})


def require_av(what: str):
    """The ``av`` module (PyAV), or an ``OSError`` naming the extra to install."""
    try:
        import av
    except ImportError:
        raise OSError(f"{what} needs PyAV, which is not installed: {VIDEO_HINT}") from None
    return av


def output_suffix(source: str | os.PathLike) -> str:
    """The extension of ``source``'s deblurred video: its own, as the user spelled it (an iPhone's ``.MOV``), where
    its container is written here (:data:`CONTAINERS`), else ``.mp4``."""
    suffix = Path(source).suffix
    return suffix if suffix.lower() in CONTAINERS else _MP4_SUFFIX


def muxer_for(target: str | os.PathLike) -> str:
    """FFmpeg's muxer for the output video ``target``, by its extension (:data:`CONTAINERS`); MP4 for any other."""
    return CONTAINERS.get(Path(target).suffix.lower(), CONTAINERS[_MP4_SUFFIX])


def transcode_video(source: str | os.PathLike, target: str | os.PathLike,
                    transform: Callable[[np.ndarray], np.ndarray], progress: bool = True, replace: bool = True) -> int:
    """Write ``transform`` of every frame of ``source`` (HxWx3 BGR uint8, upright) into ``target``, with
    ``source``'s sound and timing, in the container its extension names (:func:`muxer_for`: ``.mov`` QuickTime,
    ``.mkv`` Matroska, else MP4); returns the number of frames. Raises ``OSError`` in one line for a file that
    is not a video PyAV can read or write; nothing is left at ``target`` (or its temporary name) on any failure.
    ``replace=False``: a file that appeared at ``target`` meanwhile is kept (:func:`banet.outputs.commit_partial`)."""
    source, target = Path(source), Path(target)  # paths as strings too (before: AttributeError on str.name)
    if same_file(source, target):  # before: the deblurred video was renamed over the one it was read from
        raise OSError(f"{target}: is the video being read ({source}); give the output another name (it would be "
                      "written over)")
    av = require_av(f"{source}: deblurring a video")
    try:
        empty = os.path.getsize(source) == 0
    except OSError:
        empty = False  # FFmpeg says why below
    if empty:  # FFmpeg's word for it is "Invalid data found when processing input"
        raise OSError(f"{source}: the file is empty (0 bytes), not a video")
    try:
        # By its absolute path: FFmpeg reads a name before a colon as a protocol, so a file named by the time it
        # was recorded (2024-05-01T10:30:00.mp4, typed in its folder) was "Protocol not found" (and pipe:0.mp4
        # would have read the terminal's input).
        container = av.open(os.path.abspath(source))
    except av.FFmpegError as exc:
        raise OSError(f"{source}: not a video FFmpeg can open ({ffmpeg_reason(exc)})") from None
    with container:
        video = _video_stream(av, container, source)
        partial = partial_path(target, keep_suffix=True)
        handle = create_partial(partial)
        ours = entry_id(handle)
        sink = _Sink(handle)
        try:  # the file stays open until renamed: its inode number cannot pass to another run's file meanwhile
            try:
                frames = _transcode(av, container, video, source, sink, muxer_for(target), transform, progress)
                sink.flush()
            except Exception:
                if sink.failed is None:
                    raise
                # A write that failed (a full disk): one line naming the output, as images get (before: "[Errno
                # 28] No space left on device", or PyAV's "Error in PyAV callback: '4'" when the MP4's index,
                # written on the way out, failed again and hid it).
                raise _write_failed(sink.failed, target) from sink.failed
            try:
                # synced first: after a crash never an empty video under its name; never another run's file
                commit_partial(partial, target, replace, ours=ours)
            except OSError as exc:
                raise _write_failed(exc, target) from exc
        except BaseException:
            remove_if_ours(partial, ours)  # only the file this call made
            raise
        finally:
            handle.close()
    return frames


def _write_failed(exc: OSError, target: Path) -> OSError:
    """The one-line ``OSError`` (its errno kept) for a write of ``target`` that failed."""
    error = OSError(write_error(exc, target))
    error.errno = exc.errno
    return error


class _Sink:
    """The temporary file as PyAV writes the video into it, remembering a write that failed: PyAV raises it once,
    then only "Error in PyAV callback" for the writes after it."""

    def __init__(self, handle) -> None:
        self.handle, self.failed = handle, None

    def write(self, data) -> int:
        return self._recorded(self.handle.write, data)

    def flush(self) -> None:
        """Write what the file object still buffers, here, where a full disk is recorded as the others are."""
        self._recorded(self.handle.flush)

    def _recorded(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            self.failed = self.failed or exc
            raise

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()


def _video_stream(av, container, source: Path):
    """The stream to deblur: the first video stream that moves. A still picture is refused: an MP3 or M4A's cover
    art (a video stream marked "attached picture") was deblurred into a one-frame video, and so was a photo saved
    under a video's name; cover art next to a real video is passed over (it could come first)."""
    if not container.streams.video:
        raise OSError(f"{source}: has no video stream")
    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        raise OSError(f"{source}: has no video stream, only a still picture (cover art); nothing to deblur as a video")
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):  # FFmpeg's readers of single image files
        kind = name.removesuffix("_pipe") if name != "image2" else moving[0].codec_context.name
        raise OSError(f"{source}: is a still {kind.upper()} image, not a video; deblur it as a photo, under an image "
                      "file name")
    return moving[0]


def _transcode(av, container, video, source: Path, sink, muxer: str, transform, progress: bool) -> int:
    from tqdm import tqdm

    video.thread_type = "AUTO"
    audio = [s for s in container.streams.audio if _has_sound(s, source)]
    tags = kept_tags(container.metadata)
    output = av.open(sink, "w", format=muxer, container_options=_muxer_options(av, muxer, tags))
    try:
        output.metadata.update(tags)
        encoder = VideoEncoder(av, output, video, source)
        # The video stream's title and language, as the sound's (before: untitled, "und"); not Matroska's statistics
        # (BPS, DURATION...) nor its ENCODER, which its muxer would write back.
        keep_stream_tags(video, encoder.stream, encoded=True)
        sounds = {s.index: Sound(av, output, s, source) for s in audio}
        carried = Carried(av, output, container, video, list(container.streams.audio), encoder.stream, source,
                          failed=lambda: sink.failed is not None)
        damage = _Damage(av)
        bar = tqdm(total=video.frames or None, desc=source.name, unit="frame", disable=not progress)
        packets = container.demux(video, *audio, *carried.streams)
        with bar:
            while True:
                try:
                    packet = next(packets, None)
                except av.FFmpegError as exc:  # the file itself cannot be read on (a damaged container)
                    raise OSError(f"{source}: FFmpeg could not read the file after frame {encoder.frames} "
                                  f"({ffmpeg_reason(exc)})") from None
                if packet is None:
                    break
                if packet.stream is video:
                    for frame in damage.decode(packet):
                        pixels = frame.to_ndarray(format=encoder.pixels)  # with the file's matrix and range
                        encoder.write(frame, transform(upright(frame, pixels)))
                        bar.update()
                elif packet.stream.index in sounds:
                    sounds[packet.stream.index].write(packet, encoder.ready, damage)
                else:
                    carried.write(packet, encoder.ready, damage)
        if not encoder.frames:
            raise OSError(f"{source}: no frame could be read" + (f" ({damage.reason})" if damage.count else ""))
        carried.finish(damage)
        if damage.count:
            log.warning("%s: %d damaged packet(s) skipped (%s)", source, damage.count, damage.reason)
        _warn_if_cut_short(container, video, encoder, source)
        encoder.finish()
        for sound in sounds.values():
            sound.finish()
        output.close()  # writes the index (MP4, MOV) or cues (Matroska): a full disk can fail here too
    except BaseException as exc:
        # The partial file is removed: closing it (which writes the index after all) must not replace what went
        # wrong with its own error.
        with contextlib.suppress(Exception):
            output.close()
        if isinstance(exc, av.FFmpegError):
            raise OSError(f"{source}: FFmpeg could not write the {container_name(output)} "
                          f"({ffmpeg_reason(exc)})") from exc
        raise
    return encoder.frames


def _has_sound(stream, source: Path) -> bool:
    """Whether FFmpeg found the audio ``stream``'s sample rate and channels; one where it did not is left out, with
    a warning: an MPEG-TS (a broadcast or dashcam recording, a camera's clip cut short) declares its audio track
    before any sound, and a track that never had any packet failed the whole video ("could not write the MP4
    (Invalid argument)") or came out as an empty AAC track."""
    layout = getattr(stream, "layout", None)
    if stream.rate and layout is not None and layout.nb_channels:
        return True
    log.warning("%s: audio stream #%d (%s) is left out: FFmpeg found no sound in it (no sample rate or channels; a "
                "track with no packets, or a file cut short before its sound)", source, stream.index,
                codec_name(stream))
    return False


def _muxer_options(av, muxer: str, tags: dict[str, str]) -> dict[str, str]:
    """The ``muxer``'s options that write every one of ``tags``. MP4 and MOV: none where their standard tags hold
    them all (title, artist, comment, date: where Apple's and Windows' players look for them); else
    ``use_metadata_tags``, which writes each tag as a QuickTime "mdta" key, the standard ones too (FFmpeg reads them
    back the same). Without it an iPhone clip lost its make, model, local capture time (which Apple Photos sorts by)
    and location with altitude, and any other key (the MOV muxer too, tried). Matroska: none, its tags are
    free-form."""
    if muxer not in _MDTA_MUXERS or _muxer_writes(av, muxer, tags):
        return {}
    return dict(_EVERY_TAG)


def _muxer_writes(av, muxer: str, tags: dict[str, str]) -> bool:
    """Whether the ``muxer``, without options, writes every key of ``tags`` that has a value (it leaves out empty
    ones): tried on a file written in memory, as the keys it knows depend on FFmpeg's version; False where the
    trial fails."""
    if not any(tags.values()):
        return True
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=muxer) as trial:
            trial.metadata.update(tags)
            trial.add_data_stream("bin_data")  # a file needs a stream; a data stream needs no encoder
            trial.start_encoding()
        buffer.seek(0)
        with av.open(buffer) as written:
            found = {key.lower() for key in written.metadata}
    except (av.FFmpegError, ValueError):
        return False
    return all(key.lower() in found for key, value in tags.items() if value)


class _Damage:
    """Packets the decoders refused: skipped, as players skip them (before, one damaged packet in a camera's clip
    failed the whole video), counted for one line at the end."""

    def __init__(self, av) -> None:
        self.av, self.count, self.reason = av, 0, ""

    def decode(self, packet) -> list:
        try:
            return packet.decode()
        except self.av.FFmpegError as exc:
            self.skip(ffmpeg_reason(exc))
            return []

    def skip(self, reason: str) -> None:
        """Count a packet skipped for ``reason`` (a carried stream's too: a cue that does not decode)."""
        self.count += 1
        self.reason = reason


def _warn_if_cut_short(container, video, encoder: VideoEncoder, source: Path) -> None:
    """Log when the frames read stop well before the duration the file declares: a recording cut short (a camera
    that lost power, a copy that stopped) is read as far as it goes, which was silent before."""
    # Matroska's own tag for the track first ("00:01:02.500000000"): FFmpeg fills a Matroska stream's duration in
    # from the whole file's, which counts sound that goes on after the picture.
    declared, slack = _track_seconds(video.metadata.get("DURATION", "")), 0.02
    if declared is None and video.duration and video.time_base:
        declared = float(video.duration * video.time_base)
    elif declared is None and container.duration:  # FFmpeg's estimate, maybe from the bit rate: 10% either way
        declared, slack = container.duration / 1_000_000, 0.1  # (in FFmpeg's AV_TIME_BASE)
    if not declared:
        return
    read = encoder.reach()
    if declared - read > max(_SHORT_BY, slack * declared):
        log.warning("%s: the video stops after %.1f s of the %.1f s its header declares (the file is cut short or "
                    "damaged); the %d frame(s) read are written", source, read, declared, encoder.frames)


def _track_seconds(text: str) -> float | None:
    """Seconds in a Matroska DURATION tag ("HH:MM:SS.fraction"), or None."""
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


