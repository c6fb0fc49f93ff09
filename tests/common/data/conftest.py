"""Fixtures for the data layer: real DICOM files shipped by pydicom / pydicom-data, and a tiny CT we write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file


@pytest.fixture(scope="session")
def ct_small() -> Path:
    """pydicom's real 128 x 128 CT crop around a vertebra."""
    return Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="session")
def abdomen_bottom_up() -> Path:
    """pydicom-data's real contrast abdominal slice: 512 x 512, JPEG 2000, rows stored bottom-up."""
    path = get_testdata_file("explicit_VR-UN.dcm")
    if path is None:
        pytest.skip("pydicom-data (test extra) is not installed")
    return Path(path)


@pytest.fixture(scope="session")
def body():
    """The :func:`body_phantom` factory (fixtures cannot be imported from conftest by relative import)."""
    return body_phantom


def body_phantom(h: int = 48, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A small asymmetric HU image and muscle mask: asymmetry makes flips and transposes visible."""
    yy, xx = np.mgrid[0:h, 0:w]
    hu = np.full((h, w), -1000.0, dtype=np.float32)
    body = ((yy - h / 2) / (h * 0.45)) ** 2 + ((xx - w / 2) / (w * 0.45)) ** 2 < 1
    hu[body] = -100.0
    mask = body & (yy > h * 0.6) & (xx < w * 0.45)  # posterior-right muscle block
    hu[mask] = 45.0
    hu[h // 2 + 4 : h // 2 + 8, w // 2 - 2 : w // 2 + 2] = 700.0  # "vertebra"
    hu += np.arange(w, dtype=np.float32)[None, :] * 0.25  # non-integers: rounding is part of the contract
    return hu, mask.astype(np.uint8)
