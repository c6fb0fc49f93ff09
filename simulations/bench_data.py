"""Benchmark 6: phantom generation and ingestion speed (slices per second, one process).

Generation: ``common.phantom.synth_case`` at 512 x 512 (the loop of ``simulations.bench_phantom``),
and ``write_site`` (generate + DICOM + NIfTI mask + manifest). Ingestion: ``common.data.ingest.ingest``
over the written DICOM folder with its masks (read headers, group series, match masks, pseudonymise,
measure reference areas, write manifest.csv). Also the resampling to the network grid that training
does once per site and phase (``SliceDataset``, demo preset).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def run(quick: bool = False) -> list:
    from common.data.ingest import ingest
    from common.models.presets import get_preset
    from common.phantom import PROFILES, synth_case, write_site
    from common.train.data import SliceDataset
    from simulations.bench_common import Row

    n = 10 if quick else 30
    profile = PROFILES["general-surgery"]
    synth_case(0, profile)
    t = time.perf_counter()
    for i in range(n):
        synth_case((1, i), profile)
    gen = n / (time.perf_counter() - t)
    rows = [Row("6", "phantom generation, 512 x 512 (synth_case)", f"{gen:.1f} slices/s")]
    with tempfile.TemporaryDirectory(prefix="sarcofed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        manifest = write_site(tmp / "site", "bench", profile, n, 0, seed=2)
        rows.append(
            Row(
                "6",
                "write_site (generate + DICOM + NIfTI mask + manifest)",
                f"{n / (time.perf_counter() - t):.1f} slices/s",
            )
        )
        t = time.perf_counter()
        ingest(
            tmp / "site" / "images",
            tmp / "ingested" / "manifest.csv",
            masks_dir=tmp / "site" / "masks",
            salt_file=tmp / "salt",
            progress=False,
        )
        rows.append(
            Row(
                "6", "ingest (DICOM + NIfTI masks -> checked manifest)", f"{n / (time.perf_counter() - t):.1f} slices/s"
            )
        )
        t = time.perf_counter()
        SliceDataset(manifest, get_preset("demo"), "seg", augment=False)
        rows.append(
            Row(
                "6",
                "resample to the demo network grid (SliceDataset build, seg)",
                f"{n / (time.perf_counter() - t):.1f} slices/s",
            )
        )
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(r.what, "|", r.measured)
