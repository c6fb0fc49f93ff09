"""One hospital's part in the ``l3`` phase: train the L3 locator on its series, score it on its holdout.

Same contract as the other phases (``client.task``): the message carries the locator's weights, the
site sends back the delta of what it trained and the number of series it trained on; evaluation
sends aggregates over the holdout series only (common.metrics.location), suppressed below the
policy's smallest cohort.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from client.federated_site import Site


def train_locator_round(
    site: Site, model: Any, epochs: int, lr: float, seed: int, prox_mu: float, device: str
) -> dict[str, float]:
    """Train ``model.locator`` in place on the site's train series; returns the loss and series count."""
    from common.train.locate import train_locator
    from common.train.series_data import site_series

    series = site_series(site.manifest.parent, "train", site.cache_dir)
    if not series:
        from common.errors import InputDataError

        raise InputDataError("no train series in series.csv for the l3 phase", site.manifest.parent)
    return train_locator(
        model.locator, [s.sample for s in series], epochs=epochs, lr=lr, seed=seed, device=device, prox_mu=prox_mu
    )


def evaluate_locator(site: Site, model: Any, min_cohort: int, device: str) -> tuple[float, int, dict[str, Any]]:
    """Locate L3 in every holdout series; returns (1 - inside share, series, the site's L3 summary)."""
    from common.metrics.location import location_summary
    from common.train.locate import predict_levels, read_location, score_location
    from common.train.series_data import site_series

    rows = []
    for s in site_series(site.manifest.parent, "holdout", site.cache_dir):
        level, inside = predict_levels(model.locator, s.sample.x, device)
        location = read_location(s.z_mm, s.file_index, s.sample.z, level, inside)
        row = score_location(location, s.z_mm, float(s.row["l3_z_lo_mm"]), float(s.row["l3_z_hi_mm"]))
        row["variant"] = s.row.get("variant", "normal")
        rows.append(row)
    summary = location_summary(pd.DataFrame(rows), min_cohort=min_cohort)
    metrics: dict[str, Any] = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float, np.floating))}
    metrics["suppressed_metrics"] = ",".join(summary.get("suppressed_metrics", []))  # type: ignore[arg-type]
    inside_share = float(summary.get("l3_inside_share", math.nan))  # type: ignore[arg-type]
    n = float(summary.get("l3_n", math.nan))  # type: ignore[arg-type]
    loss = 1.0 - inside_share if math.isfinite(inside_share) else 0.0
    return loss, int(n) if math.isfinite(n) else 0, metrics
