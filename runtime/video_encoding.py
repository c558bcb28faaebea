"""The output's streams: the deblurred video in the source's bit depth and colours, and the source's sound; what
the output's muxer (MP4, QuickTime, Matroska) takes, tried on a header written in memory."""

from __future__ import annotations

import contextlib
import io
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from banet.errors import first_line
from banet.shapes import hw_text
from runtime.video_frames import clockwise, even_frame

log = logging.getLogger("runtime.video")

#: libx264's constant rate factor: 18 is the usual "visually lossless" setting (0 lossless, 23 libx264's default).
CRF = 18
#: Audio codecs copied into an MP4 as they are; others (PCM from an AVI, Vorbis) are re-encoded to AAC. A list, not
#: a trial: FFmpeg's MP4 muxer takes PCM too (ISO's "ipcm"), which few players play. Other muxers are tried.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
#: How messages name each output muxer's container.
_CONTAINER_NAMES = {"mp4": "MP4", "mov": "QuickTime (MOV)", "matroska": "Matroska"}
#: Tags of the source that would be false about the output, in lower case (Matroska writes them in upper case): the
#: software that wrote the file and its MP4 brands (the muxer writes its own), and what mkvmerge counts of a track
#: (duration, bit rate, frames, bytes; its ``_STATISTICS_*`` tags name them and the program that counted).
STALE_TAGS = frozenset({"encoder", "encoding_tool", "major_brand", "minor_version", "compatible_brands", "duration",
                        "bps", "number_of_frames", "number_of_bytes"})
_STALE_PREFIX = "_statistics_"
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
#: Frame rate assumed where a file declares none.
DEFAULT_FPS = 25


def ffmpeg_reason(exc: BaseException) -> str:
    """What an FFmpeg error says, without PyAV's "[Errno 1094995529]" and the file name it repeats."""
    return getattr(exc, "strerror", None) or first_line(exc)


def container_name(output) -> str:
    """The container an output is written as, for messages ("MP4", "Matroska")."""
    return _CONTAINER_NAMES.get(output.format.name, output.format.name)


def muxer_takes(av, output, stream) -> bool:
    """Whether ``output``'s muxer writes the source's ``stream`` copied as it is (an attachment: its file): tried on
    a header written in memory, as the muxer refuses some streams only there (which then fails the whole file)."""
    trial = av.open(io.BytesIO(), "w", format=output.format.name)
    try:
        add_copy(trial, stream)
        trial.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False
    finally:
        with contextlib.suppress(Exception):
            trial.close()


def add_copy(output, stream):
    """The stream of ``output`` that copies the source's ``stream``: its packets' codec, or its attached file."""
    if stream.type == "attachment":
        return output.add_attachment(stream.name, stream.mimetype, bytes(stream.data))
    return output.add_stream_from_template(stream)


def _stale(key: str) -> bool:
    """Whether a tag would be false about the output (:data:`STALE_TAGS`), in any case."""
    return key.lower() in STALE_TAGS or key.lower().startswith(_STALE_PREFIX)


def kept_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` without those that would be false about the output (:data:`STALE_TAGS`), in any case."""
    return {key: value for key, value in tags.items() if not _stale(key)}


def _bits(video) -> int:
    """Bits per sample of a video stream's pixel format (8 where it is unknown)."""
    try:
        return max(c.bits for c in video.codec_context.format.components)
    except (AttributeError, ValueError, TypeError):
        return 8


def _has_alpha(video) -> bool:
    """Whether a video stream's pixels carry transparency (ProRes 4444, PNG or QuickTime Animation in RGBA): an alpha
    component beside the colour ones (four in all, or grey and alpha)."""
    try:
        return len(video.codec_context.format.components) in (2, 4)
    except (AttributeError, TypeError):
        return False


def _is_rgb(video) -> bool:
    """Whether a video stream stores RGB (PNG, QuickTime RLE, FFV1 or x264 RGB, raw BGR from a machine-vision
    camera) rather than YUV: its "matrix" tag is then RGB's or none."""
    context = video.codec_context
    fmt = getattr(context, "format", None)
    return context.colorspace == _RGB_MATRIX or bool(fmt is not None and (fmt.is_rgb or fmt.has_palette))


class VideoEncoder:
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
        if _has_alpha(video):  # before: dropped without a word
            log.warning("%s: its transparency (alpha channel, %s) is not kept: %s in %s has none; the colours are "
                        "deblurred", source, video.codec_context.format.name, "HEVC" if deep else "H.264",
                        container_name(output))
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
            # QuickTime and Apple devices play HEVC in MP4 and MOV only under this tag; Matroska, which names codecs
            # its own way, ignores it (tried).
            context.codec_tag = "hvc1"
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
            log.warning("%s: %s frames are written as %s (%s 4:2:0 stores %s only; the last row/column is "
                        "repeated)", self.source, hw_text(*image.shape[:2]), hw_text(*padded.shape[:2]),
                        self.codec.split()[0], sizes)
        self.stream.width, self.stream.height = padded.shape[1], padded.shape[0]
        aspect = self.aspect
        if aspect and aspect != 1:
            self.stream.codec_context.sample_aspect_ratio = 1 / aspect if clockwise(source_frame) in (90, 270) \
                else aspect
        self.shape, self.ready = image.shape, True

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` scaled to fit the first frame's size, its shape kept, centred on black: an MP4 stream has one
        size, and the encoder stretched every frame to it without a word (a stream that changes resolution)."""
        height, width = self.shape[:2]
        scale = min(height / image.shape[0], width / image.shape[1])
        h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
        if not self.resized:
            log.warning("%s: frame %d is %s, not %s as the first; frames of another size are scaled to fit "
                        "(letterboxed)", self.source, self.frames + 1, hw_text(*image.shape[:2]),
                        hw_text(height, width))
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
            raise OSError(f"{self.source}: {hw_text(*padded.shape[:2])} frames cannot be encoded as "
                          f"{self.codec} ({ffmpeg_reason(exc)}{limit})") from None
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


def keep_stream_tags(source, stream, encoded: bool = False) -> None:
    """Give the output's ``stream`` the tags of the source's stream it is made from (language, title, handler: what
    MP4 stores; Matroska stores every tag) and its disposition (default, forced, hearing impaired...): a stream added
    from a template, or encoded anew, has neither. Not those false about the output (:data:`STALE_TAGS`: mkvmerge's
    statistics); the source's encoder (in any case: Matroska's ``ENCODER``) only on a copy, as ``encoded``: encoded
    here, the stream is not the source encoder's."""
    tags = {key: value for key, value in source.metadata.items()
            if not _stale(key) or (key.lower() == "encoder" and not encoded)}
    if "name" in tags:  # an MP4 track's title, which FFmpeg reads as "name" but writes from "title"
        tags.setdefault("title", tags.pop("name"))
    stream.metadata.update(tags)
    stream.disposition = source.disposition


def _copies(av, output, stream, codec: str) -> bool:
    """Whether the source's sound ``stream`` (of ``codec``) goes into ``output`` copied: for MP4, where
    :data:`MP4_AUDIO` names its codec; for another muxer, where it takes it (PCM in MOV and Matroska, Vorbis in
    Matroska)."""
    if output.format.name == "mp4":
        return codec in MP4_AUDIO
    return muxer_takes(av, output, stream)


class Sound:
    """One audio stream of the output: packets copied where its muxer takes the codec (:func:`_copies`), else
    decoded and re-encoded to AAC; held back until the video stream is sized (the header is written with the first
    packet)."""

    def __init__(self, av, output, stream, source: Path) -> None:
        self.output = output
        context = stream.codec_context
        # The codec's own name, not its decoder's: MP3 is decoded by "mp3float", so MP3 sound was re-encoded to AAC
        # (a second lossy generation) instead of copied.
        codec = getattr(getattr(context, "codec", None), "canonical_name", None) or context.name
        self.copy = _copies(av, output, stream, codec)
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
        keep_stream_tags(stream, self.stream, encoded=not self.copy)  # a dubbed film's languages, a commentary
        self.waiting: list = []
        #: When the next re-encoded frame starts, in seconds (None: none decoded yet)
        self.next_time: Fraction | None = None

    def write(self, packet, ready: bool, damage) -> None:
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

    def _encode(self, packet, damage):
        for frame in damage.decode(packet):
            rate = frame.sample_rate or self.stream.rate
            if self.next_time is None:  # where the source's sound starts
                self.next_time = Fraction(frame.pts) * frame.time_base if frame.pts is not None and frame.time_base \
                    else Fraction(0)
            # Gapless from the source's start: the encoder counted from 0, so sound that began after 0 (an MPEG-TS's,
            # at its 0.2-1.4 s clock, which the video keeps) came out earlier by as much, out of sync with the picture.
            frame.pts, frame.time_base = round(self.next_time * rate), Fraction(1, rate)
            self.next_time += Fraction(frame.samples, rate)
            yield from self.stream.encode(frame)

    def finish(self) -> None:
        for held in self.waiting:
            self.output.mux(held)
        self.waiting = []
        if not self.copy:
            self.output.mux(self.stream.encode(None))
