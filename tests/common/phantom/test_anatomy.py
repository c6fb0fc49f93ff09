"""The phantom's geometry step on its own: sized from the patient, in millimetres, before any painting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common.phantom.anatomy import build_geometry
from common.phantom.patient import sample_patient
from common.phantom.profiles import PROFILES
from common.phantom.shapes import polar_area


def _psoas_area(patient) -> float:
    geometry = build_geometry(np.random.default_rng(5), patient)
    return sum(blob.area for blob in geometry.blobs["psoas"])


def test_the_geometry_is_a_body_around_its_spine() -> None:
    patient = sample_patient(np.random.default_rng(1), PROFILES["general-surgery"])
    g = build_geometry(np.random.default_rng(2), patient)
    assert g.body_width > 4 * g.vw > 0 and g.body_top < g.centre[1] < g.table_y
    assert np.all(g.fascia >= g.r_cav) and np.all(g.body > g.fascia) and np.all(g.sat >= 2.0)
    assert polar_area(g.body) > polar_area(g.fascia) > polar_area(g.r_cav)
    assert {k: len(v) for k, v in g.blobs.items()} == {"psoas": 2, "ql": 2, "es": 2}


def test_muscles_are_sized_from_the_patients_target_sma() -> None:
    patient = sample_patient(np.random.default_rng(3), PROFILES["general-surgery"])
    small, large = replace(patient, sma_target_cm2=100.0), replace(patient, sma_target_cm2=200.0)
    assert abs(_psoas_area(large) / _psoas_area(small) - 2.0) < 1e-6  # same draws, twice the budget
