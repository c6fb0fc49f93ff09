"""Fixtures for runs through real Flower processes on loopback: three small synthetic sites and a
SuperLink we own, stopped (with everything it started) even when a test fails."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

PATIENTS_PER_SITE = 15  # every third is holdout: 5 holdout patients, the smallest unsuppressed cohort


def _write_site(folder: Path, profile: str, seed: int, n: int) -> Path:
    """A site folder written with the phantom and the data writers: DICOM slices, NIfTI masks, manifest.csv."""
    from common.data.dicom_io import write_ct_dicom
    from common.data.mask_io import write_mask_nifti
    from common.phantom.case import synth_case
    from common.phantom.profiles import get_profile

    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        case = synth_case((seed, i), get_profile(profile))
        pid = f"p{i:03d}"
        ct = write_ct_dicom(
            folder / "img" / f"{pid}.dcm",
            case.hu,
            case.spacing_mm,
            patient_id=pid,
            sex=case.sex,
            height_m=case.height_m,
            weight_kg=case.weight_kg,
            age_years=case.age_years,
        )
        write_mask_nifti(folder / "img" / f"{pid}.nii.gz", case.muscle, ct.geometry)
        rows.append(
            dict(
                patient_id=pid,
                image_path=f"img/{pid}.dcm",
                mask_path=f"img/{pid}.nii.gz",
                sex=case.sex,
                height_m=case.height_m,
                weight_kg=case.weight_kg,
                age=case.age_years,
                split="holdout" if i % 3 == 0 else "train",
                sma_cm2=case.sma_cm2,
                smi_cm2_m2=case.smi_cm2_m2,
                sarcopenic=case.sarcopenic(),
            )
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="session")
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three non-IID synthetic hospitals (different site profiles), manifest paths in partition order."""
    from common.phantom.profiles import PROFILES
    from common.phantom.series_site import write_series_site

    root = tmp_path_factory.mktemp("sites")
    manifests = []
    for i, name in enumerate(list(PROFILES)[:3]):
        manifests.append(_write_site(root / f"site{i}", name, seed=100 + i, n=PATIENTS_PER_SITE))
        # CT series for the l3 phase: half holdout, 5 of them, the smallest unsuppressed cohort
        fmt = "nifti" if i % 2 else "dicom"
        write_series_site(root / f"site{i}", f"site{i}", name, 10, 100 + i, fmt=fmt, grid=64, holdout_fraction=0.5)
    return manifests


@pytest.fixture(scope="session")
def superlink_factory(tmp_path_factory: pytest.TempPathFactory):
    """Start simulation SuperLinks on free ports; every one is stopped at the end of the session."""
    from simulations.flower_home import LocalSuperLink

    started: list[LocalSuperLink] = []

    def start(num_supernodes: int) -> LocalSuperLink:
        link = LocalSuperLink(tmp_path_factory.mktemp("flwr_home"), num_supernodes)
        started.append(link)
        return link.start()

    yield start
    for link in started:
        link.stop()
