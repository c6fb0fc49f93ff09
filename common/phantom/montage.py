"""A PNG grid of slices with their muscle outlines, so a person can judge a site's data at a glance.

It reads the files as written (through the same readers ingestion uses), so it also shows that masks
land on their images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.clinical import MUSCLE, SAT, VAT
from common.errors import InputDataError

WINDOW = (40.0, 400.0)  # soft-tissue window: level, width (HU)


def write_montage(
    manifest_path: str | Path | Sequence[str | Path], out_png: str | Path, n: int = 12, columns: int = 4
) -> Path:
    """Draw up to ``n`` slices (labelled ones first, spread evenly; several manifests share ``n``).

    Each tile: the slice in a soft-tissue window (level 40, width 400 HU) in canonical orientation,
    the reference muscle mask as a red outline, and a title with site, sex, age and SMA (cm2).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.data.manifest import load_case, read_manifest

    paths = [manifest_path] if isinstance(manifest_path, (str, Path)) else list(manifest_path)
    if not paths or n < 1:
        raise InputDataError("write_montage needs at least one manifest and n >= 1")
    per = [n // len(paths) + (1 if k < n % len(paths) else 0) for k in range(len(paths))]
    picked = []
    for path, count in zip(paths, per, strict=True):
        df = read_manifest(path)
        df = df.assign(_labelled=df["mask_path"].astype(str).str.len() > 0).sort_values(
            "_labelled", ascending=False, kind="stable"
        )
        labelled = df[df["_labelled"]]
        pool = labelled if len(labelled) >= count else df
        idx = np.unique(np.linspace(0, len(pool) - 1, num=min(count, len(pool))).round().astype(int))
        picked += [row for _, row in pool.iloc[idx].iterrows()]
    rows = int(np.ceil(len(picked) / columns))
    cols = min(columns, len(picked))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    lo, hi = WINDOW[0] - WINDOW[1] / 2, WINDOW[0] + WINDOW[1] / 2
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, picked, strict=True):
        ct, mask = load_case(row)
        ax.imshow(np.clip(ct.hu, lo, hi), cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
        title = f"{row.get('site', '')} {row['sex'] or '?'} {row['age']:.0f}y"
        if mask is not None:
            for value, colour in ((MUSCLE, "red"), (VAT, "lime"), (SAT, "dodgerblue")):
                if (mask == value).any():
                    ax.contour(mask == value, levels=[0.5], colors=colour, linewidths=0.5)
            title += f"\nSMA {row['sma_cm2']:.0f} cm2 SMI {row['smi_cm2_m2']:.0f}"
        else:
            title += "\n(unlabelled)"
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
