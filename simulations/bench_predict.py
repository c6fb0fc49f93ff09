"""Benchmark 4: `predict` latency for one 512 x 512 DICOM slice on CPU (demo preset), model loading apart.

``common.export.predict.predict_slice`` is timed end to end (read DICOM, load the checkpoint, segment,
measure, write mask.nii.gz, overlay.png, seg.dcm and result.json); ``load_checkpoint`` is timed alone
and subtracted. The checkpoint is a freshly initialised demo model saved as a seg checkpoint: latency
does not depend on what the weights learned. A cProfile of one call (by cumulative time, our and
library functions) goes to runs/bench/predict_profile.txt.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def _inputs(tmp: Path) -> tuple[Path, Path]:
    import torch

    from common.data.dicom_io import write_ct_dicom
    from common.models.checkpoint import save_checkpoint
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel
    from common.phantom import PROFILES, synth_case

    case = synth_case((7, 0), PROFILES["general-surgery"])
    dcm = tmp / "slice.dcm"
    write_ct_dicom(dcm, case.hu, case.spacing_mm, patient_id="BENCH-1", sex=case.sex, height_m=case.height_m,
                   weight_kg=case.weight_kg, age_years=case.age_years)
    torch.manual_seed(0)
    ckpt = tmp / "demo-seg.pt"
    save_checkpoint(ckpt, SarcoModel(get_preset("demo")), phase="seg")
    return dcm, ckpt


def stage_times(dcm: Path, ckpt: Path) -> dict[str, float]:
    """Seconds of each stage of predict_slice, called one by one the way it calls them."""
    import numpy as np
    import torch

    from common.clinical import get_cutoff
    from common.data.dicom_io import read_ct_slice
    from common.data.mask_io import write_mask_nifti
    from common.export.dicom_seg import write_muscle_seg
    from common.export.overlay import write_overlay_png
    from common.export.result import measurements
    from common.metrics import apply_hu_window
    from common.models.checkpoint import load_checkpoint
    from common.train.infer import segment

    out: dict[str, float] = {}
    t = time.perf_counter()
    ct = read_ct_slice(dcm)
    out["read DICOM"] = time.perf_counter() - t
    t = time.perf_counter()
    model, info = load_checkpoint(ckpt, phases=("seg", "cls"))
    out["load model"] = time.perf_counter() - t
    model.eval()
    t = time.perf_counter()
    with torch.inference_mode():
        raw = np.asarray(segment(model, ct, model.preset)).astype(np.uint8)
    out["segment (resample, network, back to native)"] = time.perf_counter() - t
    t = time.perf_counter()
    mask = apply_hu_window(raw, ct.hu)
    measurements(ct.hu, mask, ct.spacing_mm, height_m=ct.height_m, sex=ct.sex, weight_kg=ct.weight_kg,
                 cutoff=get_cutoff("prado2008"))
    out["measure"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_mask_nifti(Path(tmp) / "mask.nii.gz", mask, ct.geometry)
        out["write mask.nii.gz"] = time.perf_counter() - t
        t = time.perf_counter()
        write_overlay_png(Path(tmp) / "overlay.png", ct.hu, mask, ct.spacing_mm, ["a", "b"], title="bench")
        out["write overlay.png"] = time.perf_counter() - t
        t = time.perf_counter()
        write_muscle_seg(Path(tmp) / "seg.dcm", mask, ct, model_name="bench", model_version="0",
                         parameters={"preset": "demo"})
        out["write seg.dcm"] = time.perf_counter() - t
    return out


def run(quick: bool = False) -> list:
    import cProfile
    import io
    import pstats
    import statistics

    import torch

    from common.clinical import get_cutoff
    from common.export.predict import predict_slice
    from common.models.checkpoint import load_checkpoint
    from simulations.bench_common import Row, bench_dir

    rows: list[Row] = []
    repeats = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="sarcofed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        dcm, ckpt = _inputs(tmp)
        rule = get_cutoff("prado2008")
        predict_slice(dcm, ckpt, tmp / "warm", cutoff=rule)  # imports, oneDNN kernels
        totals, loads = [], []
        for i in range(repeats):
            t = time.perf_counter()
            predict_slice(dcm, ckpt, tmp / f"out{i}", cutoff=rule)
            totals.append(time.perf_counter() - t)
            t = time.perf_counter()
            load_checkpoint(ckpt, phases=("seg", "cls"))
            loads.append(time.perf_counter() - t)
        total, load = statistics.median(totals), statistics.median(loads)
        latency = total - load
        rows.append(Row("4", f"predict, one 512 x 512 DICOM slice -> mask + numbers + files, demo, CPU "
                        f"({torch.get_num_threads()} threads), model loading excluded",
                        f"{latency:.3f} s", "<= 0.15 s", latency / 0.15,
                        "ratio = latency / 0.15 s target; stages below"))
        rows.append(Row("4", "model loading (demo checkpoint)", f"{load:.3f} s (end to end with loading {total:.3f} s)"))
        stages = {k: [] for k in stage_times(dcm, ckpt)}
        for _ in range(repeats):
            for k, v in stage_times(dcm, ckpt).items():
                stages[k].append(v)
        parts = ", ".join(f"{k} {1000 * statistics.median(v):.0f} ms" for k, v in stages.items() if k != "load model")
        rows.append(Row("4", "predict stages (median)", parts))
        prof = cProfile.Profile()
        prof.enable()
        predict_slice(dcm, ckpt, tmp / "prof", cutoff=rule)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        (bench_dir() / "predict_profile.txt").write_text(buf.getvalue())
    return rows


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r.what, "|", r.measured, "|", r.target, "|", f"{r.ratio:.3f}" if r.ratio is not None else "", "|", r.note)
