"""The source's streams besides the picture and the sound, in the output as they were: subtitles and data tracks
(a GoPro's GPS and motion telemetry) copied packet for packet (not re-encoded, at the same times), in MP4 and MOV
SubRip and WebVTT written as their own text subtitles, the timecode kept, in Matroska the attached files (an ASS
subtitle's fonts); the streams the output's container cannot hold are named in one warning.

Each stream is tried on a header written in memory (:func:`runtime.video_encoding.muxer_takes`). What FFmpeg's
muxers took (FFmpeg 8, PyAV 18): Matroska every subtitle codec (SubRip, WebVTT, ASS/SSA, PGS, DVB, DVD: copied as
they are, no conversion, no styling lost) and attachments, but no data track and no MP4 text; MOV what MP4 takes
below, and a QuickTime timecode track. The MP4 muxer:

- subtitles as MP4 text (``mov_text``, "tx3g") and, by its codec list, DVD bitmaps and TTML; data as GPMF telemetry
  (``bin_data``, "gpmd"); not SubRip, WebVTT, ASS, PGS or DVB subtitles, KLV or ID3 data, nor any track without a
  codec (a QuickTime timecode "tmcd", Apple's and drones' metadata tracks), some refused only when the header is
  written, which then failed the whole video;
- it writes the empty samples between MP4 text cues itself: the source's are left out of a copy (copied too, the
  gaps came out doubled by empty samples of no duration);
- it writes its own timecode track from the video stream's "timecode" tag (a timecode track cannot be copied): the
  tag is set from the source's video stream or timecode track, and the track comes out the same (MOV likewise: it
  would take the track too, which then came out twice; Matroska keeps the tag);
- FFmpeg's decoders turn SubRip and WebVTT cues into ASS text, which its MP4 text encoder writes with their text,
  line breaks and times, bold, italic, underline, size and ASS colour; it drops a colour set in SubRip's way, a font,
  strike-through and placement (cues that had them are counted in a warning). ASS/SSA subtitles, laid out and styled
  by their script, would lose that layout: they are not converted but named in the warning.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from runtime.video_encoding import add_copy, container_name, ffmpeg_reason, keep_stream_tags, muxer_takes

log = logging.getLogger("runtime.video")

#: Subtitle codecs whose cues FFmpeg decodes to plain text MP4 text can hold: written as MP4 text (mov_text).
TEXT_SUBTITLES = frozenset({"subrip", "srt", "webvtt", "text"})
#: The ASS override tags (what a decoder makes of SubRip's <b>, <i>, <u>, <font size>) MP4 text keeps.
_KEPT_TAGS = frozenset({"b", "i", "u", "fs", "1c"})
_OVERRIDES = re.compile(rb"\{([^}]*)\}")
_TAG = re.compile(rb"\\(\d*[a-zA-Z]+)")
#: A decoded cue's end (milliseconds) where it has none: shown until the next.
_UNTIL_NEXT = 0xFFFFFFFF
#: An empty MP4 text sample: the gap between two cues, which the muxer writes itself.
_NO_CUE = b"\x00\x00"


def codec_name(stream) -> str:
    """A stream's codec as FFmpeg names it ("subrip", "bin_data"), else the name of its handler, or "no codec"."""
    context = stream.codec_context
    codec = getattr(getattr(context, "codec", None), "canonical_name", None) if context is not None else None
    return codec or getattr(stream, "name", None) or stream.metadata.get("handler_name") or "no codec"


def _timecode(stream) -> str | None:
    return next((value for key, value in stream.metadata.items() if key.lower() == "timecode"), None)


def _restyled(cues) -> bool:
    """Whether decoded cues carry ASS styling MP4 text drops (colour, font, strike-through, placement)."""
    for cue in cues:
        text = getattr(cue, "ass", b"") or b""
        for block in _OVERRIDES.findall(text):
            if any(tag.decode() not in _KEPT_TAGS for tag in _TAG.findall(block)):
                return True
    return False


class _Track:
    """One subtitle or data stream of the output, fed from one of the source's: its packets copied, or (SubRip,
    WebVTT) decoded and written as MP4 text at the same times; held back until the video stream is sized (the
    header is written with the first packet)."""

    def __init__(self, av, output, stream, text: bool) -> None:
        self.av, self.output, self.kind = av, output, stream.type
        self.decoder = stream.codec_context if text else None
        if text:
            self.decoder.open(strict=False)  # it makes its ASS header (the styles cues refer to) when opened
            self.stream = output.add_stream("mov_text")
            context = self.stream.codec_context
            context.subtitle_header = self.decoder.subtitle_header
            context.time_base = self.stream.time_base = stream.time_base
        else:
            self.stream = add_copy(output, stream)
        keep_stream_tags(stream, self.stream, encoded=text)
        self.codec = codec_name(stream)
        self.gaps = not text and self.codec == "mov_text"
        self.last_dts: int | None = None
        self.start = stream.start_time or 0
        self.cues = self.restyled = 0
        self.waiting: list = []

    def write(self, packet, damage) -> list:
        """The output packets for ``packet`` of the source (none for one skipped), timed."""
        if packet.size == 0 and packet.pts is None and packet.dts is None:  # the demuxer's end-of-stream marker
            return []
        if self.gaps and bytes(packet) == _NO_CUE:
            return []
        dts = packet.dts if packet.dts is not None else packet.pts
        if dts is None:  # a packet without a time: at its stream's last one (where FFmpeg's muxer puts it)
            dts = self.last_dts if self.last_dts is not None else self.start
        if self.last_dts is not None and dts < self.last_dts:  # the muxer would refuse it, as FFmpeg's player skips it
            damage.skip(f"a {self.kind} packet out of time order")
            return []
        packet.dts = dts
        if packet.pts is None:
            packet.pts = dts
        if self.decoder is not None:
            packet = self._as_mp4_text(packet, damage)
            if packet is None:
                return []
        self.last_dts = dts
        packet.stream = self.stream
        return [packet]

    def _as_mp4_text(self, packet, damage):
        try:
            cues = self.decoder.decode2(packet)
            if cues is None or not len(cues):  # an empty cue: the muxer writes the gap itself
                return None
            text = self.stream.codec_context.encode_subtitle(cues)
        except self.av.FFmpegError as exc:  # a damaged cue (invalid UTF-8: FFmpeg decodes text subtitles as UTF-8)
            damage.skip(ffmpeg_reason(exc))
            return None
        self.cues += 1
        self.restyled += _restyled(cues)
        text.pts, text.dts, text.time_base = packet.pts, packet.dts, packet.time_base
        text.duration = packet.duration
        if not text.duration and cues.end_display_time < _UNTIL_NEXT:  # the time the decoder read in the cue
            text.duration = round(Fraction(cues.end_display_time - cues.start_display_time, 1000) / packet.time_base)
        return text


class Carried:
    """The source's subtitle and data streams the output's muxer can hold, and the timecode; the others named in
    one warning (a stereo camera's second eye is not deblurred, so not written either). ``failed``: whether a write
    of the output failed (a full disk), which is raised, not skipped as a packet the muxer refused."""

    def __init__(self, av, output, container, video, audio: list, video_out, source: Path,
                 failed: Callable[[], bool]) -> None:
        self.av, self.output, self.source, self.failed = av, output, source, failed
        self.tracks: dict[int, _Track] = {}
        left = []
        timecode = _timecode(video)
        for stream in container.streams:
            if stream is video or stream in audio or self._attached(stream):
                continue
            if stream.type == "data" and _timecode(stream):
                # A timecode track: the muxer writes its own from the tag. MOV would take a copy as well, then
                # refuse its header with the two.
                timecode = timecode or _timecode(stream)
                continue
            track = self._track(stream)
            if track is not None:
                self.tracks[stream.index] = track
            else:
                left.append(stream)
        if timecode:
            video_out.metadata["timecode"] = timecode
        self.streams = [container.streams[i] for i in self.tracks]
        if left:  # a warning, not a note -q hides: it is the user's data (a stereo camera's second eye, subtitles)
            counts = collections.Counter(s.type for s in left)
            log.warning("%s: %s not carried into the output (%s; it holds the deblurred video stream, the sound, and "
                        "the subtitles and data tracks %s can store)", source,
                        ", ".join(f"{n} {kind} stream{'s' * (n > 1)}" for kind, n in sorted(counts.items())),
                        ", ".join(f"#{s.index} {codec_name(s)}" for s in left), container_name(output))

    def _attached(self, stream) -> bool:
        """Whether ``stream`` is an attached file (an ASS subtitle's font), now copied into the output: where its
        muxer takes attachments (Matroska; MP4 and MOV have none). It has no packets to copy."""
        if stream.type != "attachment" or not muxer_takes(self.av, self.output, stream):
            return False
        keep_stream_tags(stream, add_copy(self.output, stream))
        return True

    def _track(self, stream) -> _Track | None:
        """The output's stream for the source's ``stream``: a copy where the muxer takes it as it is, MP4 text for
        SubRip and WebVTT (in MP4 and MOV); None for the others."""
        if stream.type not in ("subtitle", "data"):
            return None
        if muxer_takes(self.av, self.output, stream):
            return _Track(self.av, self.output, stream, text=False)
        if stream.type == "subtitle" and codec_name(stream) in TEXT_SUBTITLES:
            try:
                return _Track(self.av, self.output, stream, text=True)
            except (self.av.FFmpegError, ValueError):  # its decoder does not open: named with the others
                return None
        return None

    def write(self, packet, ready: bool, damage) -> None:
        track = self.tracks[packet.stream.index]
        track.waiting += track.write(packet, damage)
        if ready:
            self._mux(track, damage)

    def _mux(self, track: _Track, damage) -> None:
        for held in track.waiting:
            try:
                self.output.mux(held)
            except self.av.FFmpegError as exc:
                if self.failed():
                    raise
                damage.skip(ffmpeg_reason(exc))
        track.waiting = []

    def finish(self, damage) -> None:
        for index, track in self.tracks.items():
            self._mux(track, damage)
            if track.restyled:
                log.warning("%s: subtitle stream #%d (%s): %d of %d cues lose styling MP4 text cannot hold (colour, "
                            "font, strike-through or placement); their text and times are kept", self.source, index,
                            track.codec, track.restyled, track.cues)
