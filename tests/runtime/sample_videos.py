"""Small seeded video clips for the video tests, written with PyAV (the video extra)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def textured(h: int, w: int, i: int) -> np.ndarray:
    """A smooth moving pattern (BGR uint8): what a camera sees, unlike noise, which no codec keeps."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 60 * np.sin((x + 3 * i) / 5) * np.cos(y / 7)
    return np.stack([base, np.roll(base, 7, axis=1), 255 - base], axis=2).clip(0, 255).astype(np.uint8)


def make_clip(path: Path, frames: int = 3, h: int = 16, w: int = 24, codec: str = "libx264",
              pix_fmt: str = "yuv420p", audio: str | None = None, rate: int = 8000, times: list[int] | None = None,
              rotation: int = 0, matrix=None, aspect=None, images: list[np.ndarray] | None = None,
              sound_seconds: float | None = None, tags: dict | None = None, crf: int | None = None,
              sound_tags: dict | None = None, video_tags: dict | None = None,
              container_options: dict | None = None) -> list[np.ndarray]:
    """A clip at 10 fps (or at ``times``, in tenths of a second) of ``frames`` textured frames (or ``images``),
    with a display ``rotation`` or ``matrix``, a pixel ``aspect`` ratio, container ``tags``, the video stream's
    ``video_tags`` and ``audio`` (a 440 Hz tone at ``rate`` Hz, as long as the video or ``sound_seconds``, with
    the stream ``sound_tags`` and disposition default), written with the muxer's ``container_options``; returns
    the frames as stored."""
    import av

    images = images or [textured(h, w, i) for i in range(frames)]
    with av.open(str(path), "w", container_options=container_options or {}) as out:
        if tags:
            out.metadata.update(tags)
        video = out.add_stream(codec, rate=10)
        video.metadata.update(video_tags or {})
        video.width, video.height, video.pix_fmt = images[0].shape[1], images[0].shape[0], pix_fmt
        if crf is not None:
            video.options = {"crf": str(crf)}
        video.codec_context.time_base = Fraction(1, 10)
        if rotation:
            video.set_display_rotation(rotation)
        if matrix is not None:
            video.set_display_matrix(np.array(matrix, np.int32))
        if aspect:
            video.codec_context.sample_aspect_ratio = aspect
        sound = out.add_stream(audio, rate=rate, layout="mono") if audio else None
        if sound is not None and sound_tags:
            sound.metadata.update(sound_tags)
            sound.disposition = av.stream.Disposition.default
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = (times[i] if times else i), Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            count = round(rate * (sound_seconds or len(images) / 10))
            samples = (np.sin(np.arange(count) * 2 * np.pi * 440 / rate) * 8000).astype(np.int16)
            tone = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
            tone.sample_rate = rate
            out.mux(sound.encode(tone))
            out.mux(sound.encode(None))
    return images


#: A minimal ASS script header: what FFmpeg's subtitle encoders (MP4 text, ASS) are opened with.
ASS_HEADER = b"""[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, \
StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


def make_tracked_clip(path: Path, frames: int = 4, subtitles: dict[str, list[tuple[int, int, bytes]]] | None = None,
                      telemetry: list[tuple[int, bytes]] | None = None, timecode: str | None = None,
                      tags: dict | None = None, audio: bool = False, fonts: dict[str, bytes] | None = None) -> None:
    """A 32x32 clip of ``frames`` frames at 10 fps (in the container its name says) with, besides the picture:
    ``subtitles`` streams by codec (``"mov_text"``, ``"subrip"``, ``"webvtt"``, ``"ass"``), each a list of cues
    (start, end in milliseconds, the packet as the codec stores it: ASS dialogue text for ``mov_text`` and ``ass``,
    which are encoded; the bytes themselves for the others, e.g. invalid UTF-8), all with the stream ``tags``; a
    GoPro-like GPMF ``telemetry`` track (``bin_data``, which MP4 stores as ``gpmd``: (milliseconds, payload)); the
    MPEG-TS KLV stream of a drone instead where the name ends in ``.ts``; a QuickTime ``timecode``, a tone, and
    ``fonts`` attached to the file by name (Matroska: what an ASS subtitle is drawn with)."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        video.codec_context.time_base = Fraction(1, 10)
        if timecode:
            video.metadata["timecode"] = timecode
        for name, data in (fonts or {}).items():
            out.add_attachment(name, "font/ttf", data)
        sound = out.add_stream("aac", rate=8000, layout="mono") if audio else None
        streams = []
        for codec, cues in (subtitles or {}).items():
            stream = out.add_stream(codec)
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.codec_context.subtitle_header = ASS_HEADER
            stream.metadata.update(tags or {})
            streams.append((stream, cues))
        data = None
        if telemetry:
            data = out.add_data_stream("klv" if path.suffix == ".ts" else "bin_data")
            data.time_base = Fraction(1, 1000)
        packets = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(textured(32, 32, i), format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            packets += video.encode(frame)
        packets += video.encode(None)
        if sound is not None:
            tone = av.AudioFrame.from_ndarray(np.zeros((1, 800 * frames), np.int16), format="s16", layout="mono")
            tone.sample_rate = 8000
            packets += sound.encode(tone) + sound.encode(None)
        for stream, cues in streams:
            for start, end, text in cues:
                if stream.codec_context.name in ("mov_text", "ass"):
                    cue = av.subtitles.subtitle.SubtitleSet.create(text, 0, end - start, pts=start * 1000)
                    packet = stream.codec_context.encode_subtitle(cue)
                else:
                    packet = av.Packet(text)
                packet.pts = packet.dts = start
                packet.duration, packet.time_base, packet.stream = end - start, Fraction(1, 1000), stream
                packets.append(packet)
        for at, payload in telemetry or []:
            packet = av.Packet(payload)
            packet.pts = packet.dts = at
            packet.duration, packet.time_base, packet.stream = 100, Fraction(1, 1000), data
            packets.append(packet)
        for packet in packets:
            out.mux(packet)
