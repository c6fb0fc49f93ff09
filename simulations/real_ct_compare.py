"""Two phantom-trained models side by side on real CT slices: what each calls muscle and fat, in pictures and cm2.

The real slices carry no reference masks, so the comparison is what a reader sees: each model's
tissues over the CT (``common.export.overlay`` colours), the areas it measures, and the HU share
of the muscle area that lies on organs (liver, spleen, kidney: pixels over 90 HU inside the predicted
muscle, which skeletal muscle rarely reaches without contrast pooling in it). A muscle-only model
(a checkpoint from before body composition) shows muscle alone.

    python -m simulations.real_ct_compare --model old=OLD.pt --model new=NEW.pt \\
        --input tests/data/real-ct-upper-abdomen --slices 0,10,19 --input pydicom:explicit_VR-UN.dcm \\
        --out docs/img/real-ct-compare.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ORGAN_HU = 90.0
"""Predicted muscle pixels above this HU are counted as lying on enhanced organs or vessels."""


def _slices(spec: str, indices: list[int]) -> list:
    """CTSlices of one input: a DICOM file, or chosen slices of a series folder (``pydicom:NAME``: its test data)."""
    from common.data.dicom_io import read_ct_slice
    from common.data.series import read_series

    if spec.startswith("pydicom:"):
        from pydicom.data import get_testdata_file

        found = get_testdata_file(spec.split(":", 1)[1])
        if found is None:
            raise SystemExit(f"{spec}: not in pydicom's test data (install pydicom-data)")
        return [read_ct_slice(str(found))]
    path = Path(spec)
    if path.is_file():
        return [read_ct_slice(path)]
    series = read_series(path)
    return [series.slice(i) for i in (indices or [series.n_slices // 2])]


def _measure(model, ct) -> tuple[np.ndarray, dict[str, float | None]]:
    from common.metrics import keep_muscle_attenuation
    from common.metrics.composition import composition
    from common.train.infer import segment_tissues_batch

    fascia, tissues = segment_tissues_batch(model, [ct])[0]
    labels = tissues if model.seg_classes > 2 else keep_muscle_attenuation(fascia, ct.hu)
    values = composition(labels, ct.hu, ct.spacing_mm, tissues=model.seg_classes > 2)
    muscle = labels == 1
    values["muscle_on_organ_pct"] = float((ct.hu[muscle] > ORGAN_HU).mean() * 100) if muscle.any() else None
    return labels, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=checkpoint.pt (repeat)")
    parser.add_argument("--input", action="append", required=True, help="series folder, DICOM file or pydicom:NAME")
    parser.add_argument("--slices", default="", help="comma-separated slice indices of series inputs")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write (one row per slice)")
    args = parser.parse_args(argv)

    from PIL import Image, ImageDraw

    from common.export.overlay import _font, overlay_rgb
    from common.models.checkpoint import load_checkpoint

    models = []
    for item in args.model:
        name, _, path = item.partition("=")
        model, _ = load_checkpoint(path, phases=("seg", "cls"))
        models.append((name, model))
    indices = [int(i) for i in args.slices.split(",") if i.strip()]
    cts = [ct for spec in args.input for ct in _slices(spec, indices)]

    tile, font = 384, _font(13)
    sheet = Image.new("RGB", (tile * len(models), (tile + 20) * len(cts)), "black")
    draw = ImageDraw.Draw(sheet)
    print("slice | model | muscle cm2 | IMAT cm2 | VAT cm2 | SAT cm2 | muscle HU | muscle on >90 HU")
    for row, ct in enumerate(cts):
        label = f"{Path(str(ct.path)).name[-12:]} ({ct.spacing_mm[0]:.2f} mm)"
        for col, (name, model) in enumerate(models):
            labels, values = _measure(model, ct)
            picture = Image.fromarray(overlay_rgb(ct.hu, labels)).resize((tile, tile))
            sheet.paste(picture, (col * tile, row * (tile + 20) + 20))
            draw.text((col * tile + 4, row * (tile + 20) + 3), f"{name}: {label}", fill="white", font=font)
            cells = [values[k] for k in ("muscle_cm2", "imat_cm2", "vat_cm2", "sat_cm2", "muscle_hu_mean")]
            shown = " | ".join("-" if v is None else f"{v:.1f}" for v in cells)
            organ = values["muscle_on_organ_pct"]
            print(f"{label} | {name} | {shown} | {'-' if organ is None else f'{organ:.1f}%'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256).save(args.out, optimize=True)  # a palette keeps the picture small for docs/
    print(f"picture: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
