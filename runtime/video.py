"""A video file through a per-frame function into an MP4 that keeps the source's sound, timing and look.

Read and written with PyAV (FFmpeg's libraries in one wheel, the ``video`` extra), which reads every container and
codec FFmpeg knows and, unlike OpenCV's writer, can carry sound:

- frames are turned upright (a phone's portrait clip is stored sideways with a display rotation, as photos carry
  an EXIF orientation) and given to the function as BGR uint8 arrays, as images are;
- they are written as H.264 (libx264, CRF :data:`CRF`: visually lossless, so the encoder does not undo the
  deblurring; OpenCV's writer, used before, had only MPEG-4 part 2), 4:2:0, each at its own presentation time
  (variable frame rates stay as recorded); a frame of an odd height or width is padded by one repeated
  row/column (4:2:0 stores even sizes only), logged once;
- every audio stream is copied packet for packet where MP4 carries its codec (:data:`MP4_AUDIO`), else re-encoded
  to AAC; the container's tags (creation time, location) are kept; subtitle and data streams are not (logged);
- the file is written under a temporary name created new (never through a link), synced and renamed into place
  only when complete (:mod:`banet.outputs`): a failure or Ctrl-C leaves no partial video under the output's name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from banet.errors import first_line
from banet.outputs import commit_partial, create_partial, partial_path

log = logging.getLogger(__name__)

VIDEO_HINT = "pip install 'banet-deploy[video]' (PyAV)"
#: libx264's constant rate factor: 18 is the usual "visually lossless" setting (0 lossless, 23 libx264's default).
CRF = 18
#: Audio codecs the MP4 muxer takes as they are; others (PCM from an AVI, Vorbis) are re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
#: FFmpeg's named channel layouts by channel count, for sound re-encoded to AAC.
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
#: FFmpeg's "MPEG" (limited, 16-235) range: what a file that does not say is read with.
_LIMITED_RANGE = 1
#: Frame rate assumed where a file declares none.
DEFAULT_FPS = 25


def require_av(what: str):
    """The ``av`` module (PyAV), or an ``OSError`` naming the extra to install."""
    try:
        import av
    except ImportError:
        raise OSError(f"{what} needs PyAV, which is not installed: {VIDEO_HINT}") from None
    return av


def even_frame(frame: np.ndarray) -> np.ndarray:
    """``frame`` with an odd height or width padded by one row/column repeating its edge: H.264 in 4:2:0 stores
    only even sizes, and a smaller frame would lose its last row and column unsaid."""
    bottom, right = frame.shape[0] % 2, frame.shape[1] % 2
    if not (bottom or right):
        return frame
    return np.pad(frame, ((0, bottom), (0, right)) + ((0, 0),) * (frame.ndim - 2), mode="edge")


def upright(frame, array: np.ndarray) -> np.ndarray:
    """``array`` (the pixels of PyAV ``frame``) turned as the file's display rotation says (counter-clockwise
    degrees, PyAV's ``VideoFrame.rotation``), as players show it."""
    turns = round(getattr(frame, "rotation", 0) or 0) // 90 % 4
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def transcode_video(source: Path, target: Path, transform: Callable[[np.ndarray], np.ndarray],
                    progress: bool = True) -> int:
    """Write ``transform`` of every frame of ``source`` (HxWx3 BGR uint8, upright) into the MP4 ``target``, with
    ``source``'s sound and timing; returns the number of frames. Raises ``OSError`` in one line for a file that
    is not a video PyAV can read or write; nothing is left at ``target`` (or its temporary name) on any failure."""
    av = require_av(f"{source}: deblurring a video")
    try:
        container = av.open(str(source))
    except av.FFmpegError as exc:
        raise OSError(f"{source}: not a video FFmpeg can open ({first_line(exc)})") from None
    with container:
        if not container.streams.video:
            raise OSError(f"{source}: has no video stream")
        partial = partial_path(target, keep_suffix=True)
        handle = create_partial(partial)
        ours = os.fstat(handle.fileno())
        try:
            with handle:
                frames = _transcode(av, container, source, handle, transform, progress)
            if _entry_id(partial) != (ours.st_dev, ours.st_ino):
                raise OSError(f"{target}: its temporary file {partial} was replaced while the video was written")
            commit_partial(partial, target)  # synced first: after a crash never an empty video under its name
        except BaseException:
            if _entry_id(partial) == (ours.st_dev, ours.st_ino):  # only the file this call made
                partial.unlink(missing_ok=True)
            raise
    return frames


def _entry_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory entry ``path`` itself (a link is not followed), None if there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _transcode(av, container, source: Path, handle, transform, progress: bool) -> int:
    from tqdm import tqdm

    video = container.streams.video[0]
    video.thread_type = "AUTO"
    audio = list(container.streams.audio)
    others = [s.type for s in container.streams if s is not video and s not in audio]
    if others:
        log.info("%s: %s stream(s) not carried into the output (only video and audio)", source, ", ".join(others))
    output = av.open(handle, "w", format="mp4")
    try:
        output.metadata.update({k: v for k, v in container.metadata.items() if k not in ("encoder", "major_brand",
                                                                                            "minor_version",
                                                                                            "compatible_brands")})
        encoder = _VideoEncoder(av, output, video, source)
        sounds = {s.index: _Sound(av, output, s, source) for s in audio}
        bar = tqdm(total=video.frames or None, desc=source.name, unit="frame", disable=not progress)
        with bar:
            try:
                for packet in container.demux(video, *audio):
                    if packet.stream is video:
                        for frame in packet.decode():
                            pixels = frame.to_ndarray(format=encoder.pixels)  # with the file's matrix and range
                            encoder.write(frame, transform(upright(frame, pixels)))
                            bar.update()
                    else:
                        sounds[packet.stream.index].write(packet, encoder.ready)
            except av.FFmpegError as exc:
                raise OSError(f"{source}: FFmpeg could not read frame {encoder.frames + 1} "
                              f"({first_line(exc)})") from None
        if not encoder.frames:
            raise OSError(f"{source}: no frame could be read")
        encoder.finish()
        for sound in sounds.values():
            sound.finish()
    except av.FFmpegError as exc:
        raise OSError(f"{source}: FFmpeg could not write the MP4 ({first_line(exc)})") from exc
    finally:
        output.close()
    return encoder.frames


def _bits(video) -> int:
    """Bits per sample of a video stream's pixel format (8 where it is unknown)."""
    try:
        return max(c.bits for c in video.codec_context.format.components)
    except (AttributeError, ValueError, TypeError):
        return 8


class _VideoEncoder:
    """The output's video stream, in the source's bit depth and colours: 8-bit sources as H.264 (every player),
    deeper ones (10-bit HDR phone clips) as 10-bit HEVC (``hvc1``, as phones write it), the frames handed to the
    transform as 16-bit BGR so no precision is lost. The source's colour tags (matrix, primaries, transfer, range)
    are copied and each frame converted back with the matrix and range it was read with (before, a clip tagged
    BT.709 came back untagged and converted with BT.601: players showed its colours shifted). Sized at the first frame
    (the transform decides the size); each frame at its source's presentation time (one tick later where a broken
    file repeats a time)."""

    def __init__(self, av, output, video, source: Path) -> None:
        self.av, self.output, self.source = av, output, source
        self.rate = video.average_rate or video.guessed_rate or Fraction(DEFAULT_FPS)
        self.time_base = video.time_base or 1 / Fraction(self.rate)
        deep = _bits(video) > 8
        self.pixels = "bgr48le" if deep else "bgr24"  # what the transform gets: uint16 or uint8 BGR
        self.stream = output.add_stream("libx265" if deep else "libx264", rate=self.rate)
        self.stream.pix_fmt = "yuv420p10le" if deep else "yuv420p"
        # x265: quiet (it prints a banner and statistics to the terminal), and no B-frames: with them, clips of one
        # or two frames came out with garbage decode times in about 1 of 5 runs, which the MP4 muxer refuses.
        self.stream.options = {"crf": str(CRF), **({"x265-params": "log-level=none:bframes=0"} if deep else {})}
        context, source_context = self.stream.codec_context, video.codec_context
        if deep:
            context.codec_tag = "hvc1"  # QuickTime and Apple devices play HEVC in MP4 only under this tag
        for tag in ("colorspace", "color_primaries", "color_trc", "color_range"):
            setattr(context, tag, getattr(source_context, tag))
        context.time_base = self.time_base
        self.frames = 0
        self.ready = False  # the stream's size is set: the header can be written, sound can go in
        self._last_pts: int | None = None

    def write(self, source_frame, image: np.ndarray) -> None:
        padded = even_frame(image)
        if not self.ready:
            if padded.shape != image.shape:
                log.warning("%s: %dx%d frames are written as %dx%d (H.264 4:2:0 stores even sizes only; the last "
                            "row/column is repeated)", self.source, image.shape[1], image.shape[0], padded.shape[1],
                            padded.shape[0])
            self.stream.width, self.stream.height = padded.shape[1], padded.shape[0]
            self.ready = True
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format=self.pixels).reformat(
            format=self.stream.pix_fmt, dst_colorspace=source_frame.colorspace,
            dst_color_range=source_frame.color_range or _LIMITED_RANGE)
        pts = source_frame.pts
        if pts is None:  # a stream without times: frame n at n / rate
            pts = round(self.frames / (self.rate * self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        frame.pts, frame.time_base, self._last_pts = pts, self.time_base, pts
        self.output.mux(self.stream.encode(frame))
        self.frames += 1

    def finish(self) -> None:
        self.output.mux(self.stream.encode(None))


class _Sound:
    """One audio stream of the output: packets copied where MP4 takes the codec, else decoded and re-encoded to
    AAC; held back until the video stream is sized (the MP4 header is written with the first packet)."""

    def __init__(self, av, output, stream, source: Path) -> None:
        self.output = output
        self.copy = stream.codec_context.name in MP4_AUDIO
        if self.copy:
            self.stream = output.add_stream_from_template(stream)
        else:
            self.stream = output.add_stream("aac", rate=stream.rate or 48000)
            channels = stream.layout.nb_channels if stream.layout is not None else 2
            self.stream.layout = _AAC_LAYOUTS.get(channels, "stereo")  # named: AAC refuses "2 channels"
            if channels not in _AAC_LAYOUTS:
                log.warning("%s: its %d-channel sound is written as stereo", source, channels)
        self.waiting: list = []

    def write(self, packet, ready: bool) -> None:
        if packet.dts is None and self.copy:  # the demuxer's end-of-stream marker
            return
        out = [packet] if self.copy else list(self._encode(packet))
        if self.copy:
            packet.stream = self.stream
        if not ready:
            self.waiting.extend(out)
            return
        for held in self.waiting + out:
            self.output.mux(held)
        self.waiting = []

    def _encode(self, packet):
        for frame in packet.decode():
            frame.pts = None  # the encoder counts samples itself
            yield from self.stream.encode(frame)

    def finish(self) -> None:
        for held in self.waiting:
            self.output.mux(held)
        self.waiting = []
        if not self.copy:
            self.output.mux(self.stream.encode(None))
