"""Small seeded images the runtime's tests deblur (one definition for every test module here)."""

import numpy as np


def random_image(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """An h x w x 3 uint8 image of seeded noise: fast to deblur, the same in every run."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def mjpeg_video(path, frames: int = 2, h: int = 32, w: int = 48):
    """An MJPEG AVI of ``frames`` random h x w frames (OpenCV's own writer: any size, odd ones included)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for i in range(frames):
        writer.write(random_image(h, w, seed=i))
    writer.release()
    return path
