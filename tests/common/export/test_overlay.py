"""overlay.png: the CT in a soft-tissue window at the spacing's aspect, the mask tinted, the text on it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from common.export.overlay import (
    EDGE_RGB,
    MIN_WIDTH,
    _erode,
    _fill_holes,
    overlay_rgb,
    write_overlay_png,
)

LINES = ["SMA 2.4 cm2", "SMI 0.9 cm2/m2", "prado2008 (SMI < 38.5): SARCOPENIC", "research use only"]


def _slice(h: int = 60, w: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """HU ramp -160..+240 along columns (the soft-tissue window), a square mask with a hole."""
    hu = np.tile(np.linspace(-160.0, 240.0, w, dtype=np.float32), (h, 1))
    mask = np.zeros((h, w), np.uint8)
    mask[10:40, 10:50] = 1
    mask[20:25, 25:30] = 0  # a hole: filled, not outlined
    return hu, mask


def _read(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im).astype(np.int16)


def test_window_tint_and_outline():
    hu, mask = _slice()
    rgb = overlay_rgb(hu, mask).astype(np.int16)
    outside = mask == 0
    assert (rgb[..., 0] == rgb[..., 1])[outside].all() and (rgb[..., 1] == rgb[..., 2])[outside].all()
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # -160 HU black, +240 HU white
    assert rgb[0, 36, 0] == pytest.approx(129, abs=1)  # about +40 HU (window level): mid grey
    square = np.zeros(mask.shape, bool)
    square[10:40, 10:50] = True
    outline = square & ~_erode(square)
    assert (rgb[outline] == EDGE_RGB).all()  # the outer border, yellow
    assert (rgb[..., 0] - rgb[..., 1] >= 80)[(mask > 0) & ~outline].all()  # every other masked pixel red
    assert (rgb[20:25, 25:30] == rgb[20:25, 25:30, :1]).all()  # the hole: grey, not outlined


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_morphology_matches_scipy(seed):
    mask = ndimage.binary_opening(np.random.default_rng(seed).random((64, 80)) < 0.6)
    mask[0, :] = mask[:, -1] = True  # the mask touches the border
    np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))
    np.testing.assert_array_equal(_erode(mask), ndimage.binary_erosion(mask))


def test_png_has_the_spacing_aspect_and_the_mask(tmp_path):
    hu, _ = _slice()
    full = np.ones_like(hu, dtype=np.uint8)  # all tinted: the red box is the image's extent
    img = _read(write_overlay_png(tmp_path / "o.png", hu, full, (0.8, 0.75), LINES, title=""))
    red = img[..., 0] - img[..., 1] > 40
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert width == img.shape[1] >= MIN_WIDTH
    assert height / width == pytest.approx((60 * 0.8) / (72 * 0.75), abs=2 / width)
    assert img.shape[0] > height  # the text band under the image


def test_text_is_drawn(tmp_path):
    hu, mask = _slice()
    text = _read(write_overlay_png(tmp_path / "t.png", hu, mask, (0.8, 0.75), LINES))
    blank = _read(write_overlay_png(tmp_path / "b.png", hu, mask, (0.8, 0.75), [""] * len(LINES), title=""))
    other = _read(
        write_overlay_png(
            tmp_path / "o.png", hu, mask, (0.8, 0.75), LINES[:2] + ["prado2008 (SMI < 38.5): not sarcopenic", LINES[3]]
        )
    )
    assert text.shape == blank.shape
    band = slice(text.shape[0] - 5 * 20, None)  # (lines + 1) x (14 px font + 6)
    assert not blank[band].any() and (text[band] > 200).all(axis=2).sum() > 100  # white text on black
    assert (text[:20, :200] != blank[:20, :200]).any()  # the title, top left
    assert (text[band] != other[band]).any()  # the verdict line shows which verdict


def test_mismatched_shapes_are_refused(tmp_path):
    hu, mask = _slice()
    with pytest.raises(ValueError, match="differ"):
        write_overlay_png(tmp_path / "o.png", hu, mask[:-1], (1.0, 1.0), LINES)


def test_each_tissue_of_a_label_map_has_its_colour_and_the_key_is_drawn(tmp_path):
    from common.export.overlay import MASK_ALPHA, TISSUE_RGB

    hu = np.zeros((60, 72), np.float32)  # 0 HU: grey 102 in the soft-tissue window
    labels = np.zeros((60, 72), np.uint8)
    labels[5:15, 5:15], labels[5:15, 20:30], labels[30:40, 5:15], labels[30:40, 20:30] = 1, 2, 3, 4
    rgb = overlay_rgb(hu, labels).astype(np.int16)
    grey = 102
    for value, (_, colour) in TISSUE_RGB.items():
        inner = _erode(_erode(labels == value))
        expected = np.round(grey * (1 - MASK_ALPHA) + np.asarray(colour) * MASK_ALPHA)
        assert np.abs(rgb[inner] - expected).max() <= 1, value
    assert (rgb[labels == 0] == grey).all()
    # muscle and IMAT together are outlined (the fascia); VAT and SAT are not
    assert (rgb[5, 5:15] == EDGE_RGB).all() and not (rgb[30, 5:15] == EDGE_RGB).all(axis=1).any()

    binary = _read(write_overlay_png(tmp_path / "one.png", hu, labels == 1, (1.0, 1.0), LINES))
    keyed = _read(write_overlay_png(tmp_path / "all.png", hu, labels, (1.0, 1.0), LINES))
    assert keyed.shape[0] > binary.shape[0]  # one more text row: the colour key
    below = keyed[binary.shape[0] - 20 * len(LINES) :]
    for _, colour in TISSUE_RGB.values():  # every key swatch is drawn in its pure colour
        assert (np.abs(below - np.asarray(colour)).sum(axis=2) == 0).any(), colour
