"""Verify a manifest row by row, as training would read it: files, mask geometry, reference values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from common.clinical import MUSCLE, area_cm2, smi
from common.data.manifest import SPLITS, load_case, read_manifest
from common.errors import SarcoFedError


@dataclass
class CheckReport:
    """Per-split counts and every bad row (line number in the CSV, pseudonym, problem)."""

    manifest: Path
    n_rows: int
    per_split: dict[str, dict] = field(default_factory=dict)
    bad: list[dict] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if s in self.per_split]

    def to_dict(self) -> dict:
        return {"manifest": str(self.manifest), "rows": self.n_rows, "per_split": self.per_split, "bad": self.bad}


def check_manifest(path: str | Path, sma_tolerance: float = 0.01) -> CheckReport:
    """Load every row with :func:`load_case`; compare sma_cm2 / smi_cm2_m2 with the mask.

    Raises InputDataError when the manifest itself is malformed (columns, values); problems with
    individual files are collected in ``CheckReport.bad`` instead.
    """
    path = Path(path)
    df = read_manifest(path)
    report = CheckReport(path, len(df))
    for split in SPLITS:
        part = df[df["split"] == split]
        if len(part):
            report.per_split[split] = {
                "rows": len(part),
                "ok": 0,
                "bad": 0,
                "with_mask": 0,
                "M": int((part["sex"] == "M").sum()),
                "F": int((part["sex"] == "F").sum()),
                "mean_sma_cm2": None,
                "sarcopenic": int(part["sarcopenic"].eq(True).sum()),
            }
    areas: dict[str, list[float]] = {s: [] for s in SPLITS}
    for index, row in df.iterrows():
        stats = report.per_split[row["split"]]
        problems = []
        try:
            ct, mask = load_case(row)
        except SarcoFedError as error:
            problems.append(str(error))
            mask = None
        if mask is not None:
            stats["with_mask"] += 1
            area = area_cm2(mask == MUSCLE, ct.spacing_mm)
            areas[row["split"]].append(area)
            reference = row["sma_cm2"]
            if math.isfinite(reference) and abs(reference - area) > sma_tolerance * max(area, 1e-6):
                problems.append(
                    f"sma_cm2 {reference:g} differs from the mask's area {area:.3f} cm2 "
                    f"(> {sma_tolerance:.0%}); re-run ingest or fix the reference"
                )
            expected_smi = smi(area, row["height_m"] if math.isfinite(row["height_m"]) else None)
            if (
                expected_smi is not None
                and math.isfinite(row["smi_cm2_m2"])
                and abs(row["smi_cm2_m2"] - expected_smi) > sma_tolerance * expected_smi
            ):
                problems.append(
                    f"smi_cm2_m2 {row['smi_cm2_m2']:g} differs from mask area / height^2 = {expected_smi:.3f}"
                )
        elif row["mask_path"].strip() == "" and math.isfinite(row["sma_cm2"]) and not problems:
            pass  # a reference SMA without mask (measured elsewhere) is allowed
        if problems:
            stats["bad"] += 1
            report.bad.append({"line": int(index) + 2, "patient_id": row["patient_id"], "problem": "; ".join(problems)})
        else:
            stats["ok"] += 1
    for split, values in areas.items():
        if values:
            report.per_split[split]["mean_sma_cm2"] = sum(values) / len(values)
    return report
