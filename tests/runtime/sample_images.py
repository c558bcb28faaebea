"""Small seeded images the runtime's tests deblur (one definition for every test module here)."""

import numpy as np


def random_image(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """An h x w x 3 uint8 image of seeded noise: fast to deblur, the same in every run."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
