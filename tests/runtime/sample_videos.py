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
              sound_seconds: float | None = None, tags: dict | None = None, crf: int | None = None
              ) -> list[np.ndarray]:
    """A clip at 10 fps (or at ``times``, in tenths of a second) of ``frames`` textured frames (or ``images``),
    with a display ``rotation`` or ``matrix``, a pixel ``aspect`` ratio, container ``tags`` and ``audio`` (a
    440 Hz tone at ``rate`` Hz, as long as the video or ``sound_seconds``); returns the frames as stored."""
    import av

    images = images or [textured(h, w, i) for i in range(frames)]
    with av.open(str(path), "w") as out:
        if tags:
            out.metadata.update(tags)
        video = out.add_stream(codec, rate=10)
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
