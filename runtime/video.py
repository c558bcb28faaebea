"""A video file through a per-frame function into an MP4 that keeps the source's sound, timing and look.

Read and written with PyAV (FFmpeg's libraries in one wheel, the ``video`` extra), which reads every container and
codec FFmpeg knows and, unlike OpenCV's writer, can carry sound:

- frames are turned upright as FFmpeg's player shows them (a phone's portrait clip is stored sideways with a
  display rotation, as photos carry an EXIF orientation; a mirrored display matrix is mirrored back) and given to
  the function as BGR uint8 arrays, as images are; non-square pixels (anamorphic camcorder footage) stay so;
- they are written as H.264 (libx264, CRF :data:`CRF`: visually lossless, so the encoder does not undo the
  deblurring; OpenCV's writer, used before, had only MPEG-4 part 2), 4:2:0, each at its own presentation time
  (variable frame rates stay as recorded); a frame of an odd height or width is padded by one repeated
  row/column (4:2:0 stores even sizes only), logged once; a frame whose size differs from the first (a stream
  that changes resolution) is scaled to fit that size, its shape kept (letterboxed), logged once;
- every audio stream is copied packet for packet where MP4 carries its codec (:data:`MP4_AUDIO`), else re-encoded
  to AAC; the container's tags (creation time, location) are kept; subtitle and data streams are not (logged);
- a packet the decoder refuses as damaged is skipped, as players skip it (logged, with a count); a file that
  stops well before the duration its header declares (a cut recording) is written as far as it goes (logged);
  a file whose only picture is a still one (an audio file's cover art, an image under a video's name) is refused;
- the file is written under a temporary name created new (never through a link), synced and renamed into place
  only when complete (:mod:`banet.outputs`): a failure or Ctrl-C leaves no partial video under the output's name.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from banet.errors import first_line
from banet.outputs import commit_partial, create_partial, partial_path, write_error

log = logging.getLogger(__name__)

VIDEO_HINT = "pip install 'banet-deploy[video]' (PyAV)"
#: libx264's constant rate factor: 18 is the usual "visually lossless" setting (0 lossless, 23 libx264's default).
CRF = 18
#: Audio codecs the MP4 muxer takes as they are; others (PCM from an AVI, Vorbis) are re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
#: FFmpeg's named channel layouts by channel count, for sound re-encoded to AAC.
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
#: The sample rates AAC can store (MPEG-4's table): FFmpeg's encoder refuses any other.
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
#: FFmpeg's "MPEG" (limited, 16-235) range: what a file that does not say is read with.
_LIMITED_RANGE = 1
#: FFmpeg's code for the BT.709 matrix, and for the "RGB" (identity) matrix of clips stored as RGB.
_BT709, _RGB_MATRIX = 1, 0
#: The smallest height and width x265 encodes (it refuses smaller frames in one opaque line); the largest x264 does.
_X265_MIN_SIDE, _MAX_SIDE = 16, 16384
#: How much shorter (seconds) than its header declares a video must stop, at least, to be reported as cut short.
_SHORT_BY = 0.5
#: Frame rate assumed where a file declares none.
DEFAULT_FPS = 25


def require_av(what: str):
    """The ``av`` module (PyAV), or an ``OSError`` naming the extra to install."""
    try:
        import av
    except ImportError:
        raise OSError(f"{what} needs PyAV, which is not installed: {VIDEO_HINT}") from None
    return av


def even_frame(frame: np.ndarray, minimum: int = 2) -> np.ndarray:
    """``frame`` with an odd height or width padded by one row/column repeating its edge: H.264 in 4:2:0 stores
    only even sizes, and a smaller frame would lose its last row and column unsaid. ``minimum`` (even): a smaller
    side is padded up to it the same way (x265 refuses frames under 16 pixels a side)."""
    height, width = (max(minimum, side + side % 2) for side in frame.shape[:2])
    bottom, right = height - frame.shape[0], width - frame.shape[1]
    if not (bottom or right):
        return frame
    return np.pad(frame, ((0, bottom), (0, right)) + ((0, 0),) * (frame.ndim - 2), mode="edge")


def _display_matrix(frame) -> np.ndarray | None:
    """The 3x3 display matrix (16.16 fixed point, row by row) PyAV ``frame`` carries, or None."""
    try:
        data = frame.side_data.get("DISPLAYMATRIX")
        return None if data is None else np.frombuffer(bytes(data), np.int32)[:9]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _clockwise(frame) -> int:
    """The quarter turn the display matrix of ``frame`` asks for, clockwise in degrees (0, 90, 180 or 270):
    FFmpeg's angle (PyAV's ``VideoFrame.rotation``, counter-clockwise) to the nearest quarter."""
    angle = getattr(frame, "rotation", 0) or 0
    return -round(angle / 90) * 90 % 360 if np.isfinite(angle) else 0


def upright(frame, array: np.ndarray) -> np.ndarray:
    """``array`` (the pixels of PyAV ``frame``) turned and mirrored as the file's display matrix says, with the
    rules of FFmpeg's own player (ffplay's autorotate): a turn by quarters, then the mirroring the matrix adds.
    Before, only the turn was read: a mirrored matrix (some front cameras, editing apps' "flip") came out upside
    down instead of mirrored."""
    matrix = _display_matrix(frame)
    if matrix is None:
        return array
    turn = _clockwise(frame)
    if turn == 90:
        turned = array.swapaxes(0, 1) if matrix[3] > 0 else np.rot90(array, -1)
    elif turn == 270:
        turned = np.rot90(array, -1)[::-1] if matrix[3] < 0 else np.rot90(array, 1)
    else:  # 180 is a mirroring left-right and one top-bottom; a single one of them is a mirrored matrix
        turned = array[:, ::-1] if turn == 180 and matrix[0] < 0 else array
        turned = turned[::-1] if matrix[4] < 0 else turned
    return array if turned is array else np.ascontiguousarray(turned)


def _reason(exc: BaseException) -> str:
    """What an FFmpeg error says, without PyAV's "[Errno 1094995529]" and the file name it repeats."""
    return getattr(exc, "strerror", None) or first_line(exc)


def transcode_video(source: Path, target: Path, transform: Callable[[np.ndarray], np.ndarray],
                    progress: bool = True) -> int:
    """Write ``transform`` of every frame of ``source`` (HxWx3 BGR uint8, upright) into the MP4 ``target``, with
    ``source``'s sound and timing; returns the number of frames. Raises ``OSError`` in one line for a file that
    is not a video PyAV can read or write; nothing is left at ``target`` (or its temporary name) on any failure."""
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
        raise OSError(f"{source}: not a video FFmpeg can open ({_reason(exc)})") from None
    with container:
        video = _video_stream(av, container, source)
        partial = partial_path(target, keep_suffix=True)
        handle = create_partial(partial)
        ours = os.fstat(handle.fileno())
        sink = _Sink(handle)
        try:
            try:
                with handle:
                    frames = _transcode(av, container, video, source, sink, transform, progress)
                    sink.flush()
            except Exception:
                if sink.failed is None:
                    raise
                # A write that failed (a full disk): one line naming the output, as images get (before: "[Errno
                # 28] No space left on device", or PyAV's "Error in PyAV callback: '4'" when the MP4's index,
                # written on the way out, failed again and hid it).
                raise _write_failed(sink.failed, target) from sink.failed
            if _entry_id(partial) != (ours.st_dev, ours.st_ino):
                raise OSError(f"{target}: its temporary file {partial} was replaced while the video was written")
            try:
                commit_partial(partial, target)  # synced first: after a crash never an empty video under its name
            except OSError as exc:
                raise _write_failed(exc, target) from exc
        except BaseException:
            if _entry_id(partial) == (ours.st_dev, ours.st_ino):  # only the file this call made
                partial.unlink(missing_ok=True)
            raise
    return frames


def _write_failed(exc: OSError, target: Path) -> OSError:
    """The one-line ``OSError`` (its errno kept) for a write of ``target`` that failed."""
    error = OSError(write_error(exc, target))
    error.errno = exc.errno
    return error


class _Sink:
    """The temporary file as PyAV writes the MP4 into it, remembering a write that failed: PyAV raises it once,
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


def _entry_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory entry ``path`` itself (a link is not followed), None if there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _transcode(av, container, video, source: Path, sink, transform, progress: bool) -> int:
    from tqdm import tqdm

    video.thread_type = "AUTO"
    audio = list(container.streams.audio)
    others = collections.Counter(s.type for s in container.streams if s is not video and s not in audio)
    if others:  # a warning, not a note -q hides: it is the user's data (a stereo camera's second eye, subtitles)
        log.warning("%s: %s not carried into the output (it holds the deblurred video stream and the sound)", source,
                    ", ".join(f"{n} {kind} stream{'s' * (n > 1)}" for kind, n in sorted(others.items())))
    output = av.open(sink, "w", format="mp4")
    try:
        output.metadata.update({k: v for k, v in container.metadata.items() if k not in ("encoder", "major_brand",
                                                                                            "minor_version",
                                                                                            "compatible_brands")})
        encoder = _VideoEncoder(av, output, video, source)
        sounds = {s.index: _Sound(av, output, s, source) for s in audio}
        damage = _Damage(av)
        bar = tqdm(total=video.frames or None, desc=source.name, unit="frame", disable=not progress)
        packets = container.demux(video, *audio)
        with bar:
            while True:
                try:
                    packet = next(packets, None)
                except av.FFmpegError as exc:  # the file itself cannot be read on (a damaged container)
                    raise OSError(f"{source}: FFmpeg could not read the file after frame {encoder.frames} "
                                  f"({_reason(exc)})") from None
                if packet is None:
                    break
                if packet.stream is video:
                    for frame in damage.decode(packet):
                        pixels = frame.to_ndarray(format=encoder.pixels)  # with the file's matrix and range
                        encoder.write(frame, transform(upright(frame, pixels)))
                        bar.update()
                else:
                    sounds[packet.stream.index].write(packet, encoder.ready, damage)
        if not encoder.frames:
            raise OSError(f"{source}: no frame could be read" + (f" ({damage.reason})" if damage.count else ""))
        if damage.count:
            log.warning("%s: %d damaged packet(s) skipped (%s)", source, damage.count, damage.reason)
        _warn_if_cut_short(container, video, encoder, source)
        encoder.finish()
        for sound in sounds.values():
            sound.finish()
        output.close()  # writes the MP4's index: a full disk can fail here too
    except BaseException as exc:
        # The partial file is removed: closing it (which writes the index after all) must not replace what went
        # wrong with its own error.
        with contextlib.suppress(Exception):
            output.close()
        if isinstance(exc, av.FFmpegError):
            raise OSError(f"{source}: FFmpeg could not write the MP4 ({_reason(exc)})") from exc
        raise
    return encoder.frames


class _Damage:
    """Packets the decoders refused: skipped, as players skip them (before, one damaged packet in a camera's clip
    failed the whole video), counted for one line at the end."""

    def __init__(self, av) -> None:
        self.av, self.count, self.reason = av, 0, ""

    def decode(self, packet) -> list:
        try:
            return packet.decode()
        except self.av.FFmpegError as exc:
            self.count += 1
            self.reason = _reason(exc)
            return []


def _warn_if_cut_short(container, video, encoder: _VideoEncoder, source: Path) -> None:
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


def _bits(video) -> int:
    """Bits per sample of a video stream's pixel format (8 where it is unknown)."""
    try:
        return max(c.bits for c in video.codec_context.format.components)
    except (AttributeError, ValueError, TypeError):
        return 8


def _is_rgb(video) -> bool:
    """Whether a video stream stores RGB (PNG, QuickTime RLE, FFV1 or x264 RGB, raw BGR from a machine-vision
    camera) rather than YUV: its "matrix" tag is then RGB's or none."""
    context = video.codec_context
    fmt = getattr(context, "format", None)
    return context.colorspace == _RGB_MATRIX or bool(fmt is not None and (fmt.is_rgb or fmt.has_palette))


class _VideoEncoder:
    """The output's video stream, in the source's bit depth and colours: 8-bit sources as H.264 (every player),
    deeper ones (10-bit HDR phone clips) as 10-bit HEVC (``hvc1``, as phones write it), the frames handed to the
    transform as 16-bit BGR so no precision is lost. The source's colour tags (matrix, primaries, transfer, range)
    are copied and each frame converted back with the matrix and range it was read with (before, a clip tagged
    BT.709 came back untagged and converted with BT.601: players showed its colours shifted); an RGB source is
    converted with BT.709 and tagged so (its own "RGB" tag on YUV frames made players show false colours). Sized at
    the first frame (the transform decides the size); each frame at its source's presentation time (one tick later
    where a broken file repeats a time)."""

    def __init__(self, av, output, video, source: Path) -> None:
        self.av, self.output, self.source = av, output, source
        self.rate = video.average_rate or video.guessed_rate or Fraction(DEFAULT_FPS)
        self.time_base = video.time_base or 1 / Fraction(self.rate)
        deep = _bits(video) > 8
        self.pixels = "bgr48le" if deep else "bgr24"  # what the transform gets: uint16 or uint8 BGR
        self.codec = "HEVC (x265)" if deep else "H.264 (x264)"
        self.minimum = _X265_MIN_SIDE if deep else 2
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
        self.matrix = _BT709 if _is_rgb(video) else None  # None: each frame's own
        if self.matrix is not None:
            context.colorspace = self.matrix
        context.time_base = self.time_base
        # Non-square pixels (HDV, DV, anamorphic lenses): before, not written, so players showed the picture
        # squeezed.
        self.aspect = video.sample_aspect_ratio or source_context.sample_aspect_ratio
        self.frames = 0
        self.ready = False  # the stream's size is set: the header can be written, sound can go in
        self.shape: tuple[int, ...] = ()
        self.resized = False
        self._first_pts: int | None = None
        self._last_pts: int | None = None

    def _start(self, source_frame, image: np.ndarray) -> None:
        """Size the stream at the first frame (and its pixels' aspect, turned with the picture)."""
        padded = even_frame(image, self.minimum)
        if padded.shape != image.shape:
            sizes = "even sizes" + (f" of at least {self.minimum} pixels" if self.minimum > 2 else "")
            log.warning("%s: %dx%d frames are written as %dx%d (%s 4:2:0 stores %s only; the last row/column is "
                        "repeated)", self.source, image.shape[1], image.shape[0], padded.shape[1], padded.shape[0],
                        self.codec.split()[0], sizes)
        self.stream.width, self.stream.height = padded.shape[1], padded.shape[0]
        aspect = self.aspect
        if aspect and aspect != 1:
            self.stream.codec_context.sample_aspect_ratio = 1 / aspect if _clockwise(source_frame) in (90, 270) \
                else aspect
        self.shape, self.ready = image.shape, True

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` scaled to fit the first frame's size, its shape kept, centred on black: an MP4 stream has one
        size, and the encoder stretched every frame to it without a word (a stream that changes resolution)."""
        height, width = self.shape[:2]
        scale = min(height / image.shape[0], width / image.shape[1])
        h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
        if not self.resized:
            log.warning("%s: frame %d is %dx%d, not %dx%d as the first; frames of another size are scaled to fit "
                        "(letterboxed)", self.source, self.frames + 1, image.shape[1], image.shape[0], width, height)
            self.resized = True
        scaled = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self.pixels).reformat(
            width=w, height=h).to_ndarray()
        canvas = np.zeros((height, width) + scaled.shape[2:], scaled.dtype)
        top, left = (height - h) // 2, (width - w) // 2
        canvas[top:top + h, left:left + w] = scaled
        return canvas

    def write(self, source_frame, image: np.ndarray) -> None:
        if not self.ready:
            self._start(source_frame, image)
        elif image.shape[:2] != self.shape[:2]:
            image = self._fit(image)
        padded = even_frame(image, self.minimum)
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format=self.pixels).reformat(
            format=self.stream.pix_fmt, dst_colorspace=self.matrix or source_frame.colorspace,
            dst_color_range=source_frame.color_range or _LIMITED_RANGE)
        pts = source_frame.pts
        if pts is None:  # a stream without times: frame n at n / rate
            pts = round(self.frames / (self.rate * self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        frame.pts, frame.time_base, self._last_pts = pts, self.time_base, pts
        if self._first_pts is None:
            self._first_pts = pts
        try:
            packets = self.stream.encode(frame)
        except self.av.FFmpegError as exc:
            if self.frames:
                raise
            # The encoder opens at the first frame; before, its refusal read "could not read frame 1".
            limit = "; at most 16384 pixels a side" if max(padded.shape[:2]) > _MAX_SIDE else ""
            raise OSError(f"{self.source}: {padded.shape[1]}x{padded.shape[0]} frames cannot be encoded as "
                          f"{self.codec} ({_reason(exc)}{limit})") from None
        self.output.mux(packets)
        self.frames += 1

    def reach(self) -> float:
        """How far (seconds) the frames written go, to one frame after the last: the larger of their span and the
        last one's time, as files count the duration they declare from their first frame or from zero."""
        if self._first_pts is None:
            return 0.0
        end = self._last_pts * self.time_base + 1 / Fraction(self.rate)
        return float(max(end - self._first_pts * self.time_base, end))

    def finish(self) -> None:
        self.output.mux(self.stream.encode(None))


def _aac_rate(rate: int) -> int:
    """The sample rate sound of ``rate`` Hz is re-encoded to AAC at: the same where AAC takes it, else the next
    higher one AAC takes (the highest, 96 kHz, for more)."""
    return next((r for r in _AAC_RATES if r >= rate), _AAC_RATES[-1])


class _Sound:
    """One audio stream of the output: packets copied where MP4 takes the codec, else decoded and re-encoded to
    AAC; held back until the video stream is sized (the MP4 header is written with the first packet)."""

    def __init__(self, av, output, stream, source: Path) -> None:
        self.output = output
        context = stream.codec_context
        # The codec's own name, not its decoder's: MP3 is decoded by "mp3float", so MP3 sound was re-encoded to AAC
        # (a second lossy generation) instead of copied.
        codec = getattr(getattr(context, "codec", None), "canonical_name", None) or context.name
        self.copy = codec in MP4_AUDIO
        if self.copy:
            self.stream = output.add_stream_from_template(stream)
        else:
            rate = _aac_rate(stream.rate or 48000)
            if stream.rate and rate != stream.rate:  # before: "could not read frame 1 (... avcodec_open2("aac"))"
                log.warning("%s: its %d Hz sound is written at %d Hz (a rate AAC can store)", source, stream.rate,
                            rate)
            self.stream = output.add_stream("aac", rate=rate)
            channels = stream.layout.nb_channels if stream.layout is not None else 2
            self.stream.layout = _AAC_LAYOUTS.get(channels, "stereo")  # named: AAC refuses "2 channels"
            if channels not in _AAC_LAYOUTS:
                log.warning("%s: its %d-channel sound is written as stereo", source, channels)
        self.waiting: list = []

    def write(self, packet, ready: bool, damage: _Damage) -> None:
        if packet.dts is None and self.copy:  # the demuxer's end-of-stream marker
            return
        out = [packet] if self.copy else list(self._encode(packet, damage))
        if self.copy:
            packet.stream = self.stream
        if not ready:
            self.waiting.extend(out)
            return
        for held in self.waiting + out:
            self.output.mux(held)
        self.waiting = []

    def _encode(self, packet, damage: _Damage):
        for frame in damage.decode(packet):
            frame.pts = None  # the encoder counts samples itself
            yield from self.stream.encode(frame)

    def finish(self) -> None:
        for held in self.waiting:
            self.output.mux(held)
        self.waiting = []
        if not self.copy:
            self.output.mux(self.stream.encode(None))
