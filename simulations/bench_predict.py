"""Benchmark 4: `predict` latency for one 512 x 512 DICOM slice on CPU (demo preset), model loading apart.

Model loading is ``common.export.predict.load_model`` (read the checkpoint, rebuild the network, hash
the file for result.json), timed alone. Latency is ``predict_slice`` on the loaded model, end to end:
read DICOM, segment, measure, write mask.nii.gz, seg.dcm, overlay.png and result.json. The phases are
then timed one by one, calling what predict_slice calls in the same order, so a regression shows
where it is. The checkpoint is a freshly initialised demo model saved as a seg checkpoint: latency
does not depend on what the weights learned. A cProfile of one call (by cumulative time, our and
library functions) goes to runs/bench/predict_profile.txt.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

PHASES = ("read", "segment", "measure", "write mask", "write overlay", "write SEG", "write result")


def _inputs(tmp: Path) -> tuple[Path, Path]:
    import torch

    from common.data.dicom_io import write_ct_dicom
    from common.models.checkpoint import save_checkpoint
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel
    from common.phantom import PROFILES, synth_case

    case = synth_case((7, 0), PROFILES["general-surgery"])
    dcm = tmp / "slice.dcm"
    write_ct_dicom(
        dcm,
        case.hu,
        case.spacing_mm,
        patient_id="BENCH-1",
        sex=case.sex,
        height_m=case.height_m,
        weight_kg=case.weight_kg,
        age_years=case.age_years,
    )
    torch.manual_seed(0)
    ckpt = tmp / "demo-seg.pt"
    save_checkpoint(ckpt, SarcoModel(get_preset("demo")), phase="seg")
    return dcm, ckpt


def stage_times(dcm: Path, loaded, out_dir: Path) -> dict[str, float]:
    """Seconds of each phase of predict_slice (PHASES), called one by one the way it calls them."""
    import numpy as np
    import torch

    from common.clinical import get_cutoff
    from common.data.dicom_io import read_ct_slice
    from common.data.mask_io import write_mask_nifti
    from common.export.dicom_seg import write_muscle_seg
    from common.export.overlay import write_overlay_png
    from common.export.predict import _overlay_lines
    from common.export.result import measurements, versions, write_result_json
    from common.metrics import keep_muscle_attenuation
    from common.train.infer import segment

    out: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        out[name] = now - clock[0]
        clock[0] = now

    ct = read_ct_slice(dcm)
    lap("read")
    with torch.inference_mode():
        raw = np.asarray(segment(loaded.model, ct, loaded.preset)).astype(np.uint8)
    lap("segment")
    mask = keep_muscle_attenuation(raw, ct.hu)
    record = measurements(
        ct.hu,
        mask,
        ct.spacing_mm,
        height_m=ct.height_m,
        sex=ct.sex,
        weight_kg=ct.weight_kg,
        cutoff=get_cutoff("prado2008"),
    )
    lap("measure")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_mask_nifti(out_dir / "mask.nii.gz", mask, ct.geometry)
    lap("write mask")
    write_overlay_png(
        out_dir / "overlay.png", ct.hu, mask, ct.spacing_mm, _overlay_lines(record), title=f"SarcoFed demo: {dcm.name}"
    )
    lap("write overlay")
    write_muscle_seg(
        out_dir / "seg.dcm",
        mask,
        ct,
        model_name="SarcoFed demo seg",
        model_version="bench",
        parameters={"preset": "demo", "phase": "seg", "model_sha256": loaded.sha256},
    )
    lap("write SEG")
    record["versions"] = versions()
    write_result_json(out_dir / "result.json", record)
    lap("write result")
    return out


def run(quick: bool = False) -> list:
    import cProfile
    import io
    import pstats
    import statistics

    import torch

    from common.clinical import get_cutoff
    from common.export.predict import load_model, predict_slice
    from simulations.bench_common import Row, bench_dir

    rows: list[Row] = []
    repeats = 3 if quick else 9
    with tempfile.TemporaryDirectory(prefix="sarcofed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        dcm, ckpt = _inputs(tmp)
        rule = get_cutoff("prado2008")
        loaded = load_model(ckpt)
        predict_slice(dcm, loaded, tmp / "warm", cutoff=rule)  # imports, oneDNN kernels, version lookup
        totals: list[float] = []
        loads: list[float] = []
        stages: dict[str, list[float]] = {k: [] for k in PHASES}
        for i in range(repeats):  # interleaved, so a busy spell on a shared machine hits all alike
            t = time.perf_counter()
            loaded = load_model(ckpt)
            loads.append(time.perf_counter() - t)
            t = time.perf_counter()
            predict_slice(dcm, loaded, tmp / f"out{i}", cutoff=rule)
            totals.append(time.perf_counter() - t)
            for k, v in stage_times(dcm, loaded, tmp / f"stages{i}").items():
                stages[k].append(v)
        latency, load = statistics.median(totals), statistics.median(loads)
        rows.append(
            Row(
                "4",
                f"predict, one 512 x 512 DICOM slice -> mask + numbers + files, demo, CPU "
                f"({torch.get_num_threads()} threads), model loading excluded",
                f"{latency:.3f} s",
                "<= 0.15 s",
                latency / 0.15,
                f"ratio = latency / 0.15 s target; median of {repeats}, fastest {min(totals):.3f} s",
            )
        )
        rows.append(
            Row(
                "4",
                "model loading (demo checkpoint: load_model, with SHA-256 of the file)",
                f"{load:.3f} s (with one prediction {load + latency:.3f} s)",
            )
        )
        medians = {k: statistics.median(v) for k, v in stages.items()}
        parts = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in medians.items())
        rows.append(Row("4", "predict phases (median)", f"{parts}; sum {1000 * sum(medians.values()):.0f} ms"))
        prof = cProfile.Profile()
        prof.enable()
        predict_slice(dcm, loaded, tmp / "prof", cutoff=rule)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        (bench_dir() / "predict_profile.txt").write_text(buf.getvalue())
    return rows


if __name__ == "__main__":
    import os
    import sys

    import torch

    # As simulations.bench does: on a busy machine OpenMP's spinning threads slow torch many-fold.
    cores = os.cpu_count() or 1
    torch.set_num_threads(1 if os.getloadavg()[0] >= cores / 2 else cores)
    for r in run(quick="--quick" in sys.argv):
        print(r.what, "|", r.measured, "|", r.target, "|", f"{r.ratio:.3f}" if r.ratio is not None else "", "|", r.note)
