"""Fixtures shared by the hospital-side command tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def body():
    """Factory of a small asymmetric HU image (H, W) float32 and its muscle mask (H, W) uint8."""

    def make(h: int = 48, w: int = 40):
        yy, xx = np.mgrid[0:h, 0:w]
        hu = np.full((h, w), -1000.0, dtype=np.float32)
        inside = ((yy - h / 2) / (h * 0.45)) ** 2 + ((xx - w / 2) / (w * 0.45)) ** 2 < 1
        hu[inside] = -100.0
        mask = inside & (yy > h * 0.6) & (xx < w * 0.45)
        hu[mask] = 45.0
        return hu, mask.astype(np.uint8)

    return make
