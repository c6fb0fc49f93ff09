"""Small synthetic sites for the training tests: real DICOM + NIfTI files and a real manifest.

A ring of "muscle" (+50 HU) inside a fat body (-100 HU) with an organ of muscle-like HU (+40) in the
middle, so intensity alone does not solve the task; the ring is thin for "sarcopenic" patients.
128 x 128 pixels at 3.2 mm: loads in milliseconds, resamples to the tiny preset's 6.4 mm grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def write_ring_site(
    out_dir: Path,
    n_train: int = 12,
    n_holdout: int = 4,
    n_unlabelled: int = 4,
    size: int = 128,
    spacing: float = 3.2,
    seed: int = 0,
) -> Path:
    """Write DICOM slices, NIfTI masks and manifest.csv; return the manifest path."""
    from common.data.dicom_io import write_ct_dicom
    from common.data.manifest import write_manifest
    from common.data.mask_io import write_mask_nifti

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = (np.mgrid[0:size, 0:size] - (size - 1) / 2) * spacing
    rows = []
    splits = ["train"] * n_train + ["holdout"] * n_holdout + ["unlabelled"] * n_unlabelled
    for i, split in enumerate(splits):
        a, b = rng.uniform(150, 185), rng.uniform(105, 130)
        r = np.hypot(xx / a, yy / b)
        sarcopenic = bool(i % 2)
        thick = rng.uniform(0.08, 0.11) if sarcopenic else rng.uniform(0.17, 0.22)
        hu = np.full((size, size), -1000.0)
        hu[r < 1.0] = -100.0
        muscle = (r < 0.85) & (r > 0.85 - thick)
        hu[muscle] = 50.0
        hu[np.hypot((xx - rng.uniform(-20, 20)) / 40, yy / 30) < 1.0] = 40.0
        hu += rng.normal(0, 12, hu.shape)
        pid = f"p{i:03d}"
        ct = write_ct_dicom(
            out_dir / f"{pid}.dcm",
            hu.astype(np.float32),
            (spacing, spacing),
            patient_id=pid,
            sex="M" if i % 3 else "F",
            height_m=1.75,
            weight_kg=75.0,
            age_years=60.0,
        )
        mask_path = ""
        if split != "unlabelled":
            write_mask_nifti(out_dir / f"{pid}_mask.nii.gz", muscle.astype(np.uint8), ct.geometry)
            mask_path = f"{pid}_mask.nii.gz"
        area = float(muscle.sum()) * spacing * spacing / 100
        rows.append(
            {
                "patient_id": pid,
                "image_path": f"{pid}.dcm",
                "mask_path": mask_path,
                "sex": "M" if i % 3 else "F",
                "height_m": 1.75,
                "weight_kg": 75.0,
                "age": 60.0,
                "split": split,
                "sma_cm2": area if mask_path else None,
                "smi_cm2_m2": area / 1.75**2 if mask_path else None,
                "sarcopenic": sarcopenic if mask_path else None,
            }
        )
    return write_manifest(pd.DataFrame(rows), out_dir / "manifest.csv")


@pytest.fixture(scope="session")
def ring_site(tmp_path_factory) -> Path:
    """Manifest path of a 20-slice ring site (12 train, 4 holdout, 4 unlabelled)."""
    return write_ring_site(tmp_path_factory.mktemp("ring_site"))
