"""A sagittal picture of a series with the slice the L3 locator chose, so a person can check the level.

The reformat runs through the body's midline (the spine), head at the top, in a bone-friendly window;
the chosen slice is a red line, and the levels the locator read are ticked on the side (where its
continuous level passes each whole vertebra). When L3 was not found the picture says so and shows what
the series covers instead. Drawn with PIL, like the overlay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.export.overlay import _font

SAGITTAL_WINDOW = (1400.0, 300.0)
"""(width, level) in HU: -400..+1000, soft tissue grey and every vertebra, rib and crest white."""


def write_series_view_png(
    path: str | Path,
    hu: np.ndarray,
    z_mm: np.ndarray,
    pixel_mm: float,
    *,
    chosen_k: int | None,
    grid_z: np.ndarray,
    level: np.ndarray,
    lines: list[str],
    font_px: int = 13,
) -> Path:
    """Write the midline sagittal reformat of ``hu`` ((N, H, W) canonical, z ascending) as a PNG."""
    from PIL import Image, ImageDraw

    from common.train.locate import level_name

    body = (hu > -500).mean(axis=(0, 1))
    column = int(np.round(np.average(np.arange(hu.shape[2]), weights=body + 1e-6)))
    sagittal = hu[::-1, :, column]  # (N, H): head at the top, anterior at the left
    width, centre = SAGITTAL_WINDOW
    grey = np.clip((sagittal - (centre - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    span = float(z_mm[-1] - z_mm[0]) if len(z_mm) > 1 else pixel_mm
    rows = max(len(z_mm), int(round(span / pixel_mm)))
    scale = max(1.0, 480.0 / max(rows, 1))
    size = (int(round(grey.shape[1] * scale)), int(round(rows * scale)))
    pic = Image.fromarray(grey).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    font = _font(font_px)
    margin, line_h = 70, font_px + 6
    canvas = Image.new("RGB", (size[0] + margin, size[1] + line_h * (len(lines) + 1)), "black")
    canvas.paste(pic, (margin, 0))
    draw = ImageDraw.Draw(canvas)

    def y_of(z: float) -> int:
        return int(round((z_mm[-1] - z) / max(span, 1e-6) * (size[1] - 1))) if len(z_mm) > 1 else size[1] // 2

    for whole in range(int(np.ceil(level.min())), int(np.floor(level.max())) + 1):
        k = np.flatnonzero(np.diff(np.sign(level - whole)) != 0)
        if k.size:  # where the level passes a whole vertebra
            i = int(k[0])
            t = (whole - level[i]) / (level[i + 1] - level[i])
            y = y_of(float(grid_z[i] + t * (grid_z[i + 1] - grid_z[i])))
            draw.line([(margin - 12, y), (margin - 2, y)], fill=(120, 200, 255))
            draw.text((4, y - font_px // 2), level_name(whole), fill=(120, 200, 255), font=font)
    if chosen_k is not None:
        y = y_of(float(z_mm[chosen_k]))
        draw.line([(margin, y), (canvas.width - 1, y)], fill=(255, 40, 30), width=2)
    for i, text in enumerate(lines):
        draw.text((6, size[1] + 6 + i * line_h), text, fill="white", font=font)
    path = Path(path)
    canvas.save(path, compress_level=1)
    return path
