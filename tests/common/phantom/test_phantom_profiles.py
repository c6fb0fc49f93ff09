"""Site profiles: validated at construction, differing where sites really differ."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from common.phantom import PROFILES, get_profile
from common.phantom.patient import sample_patient


def test_profiles_are_non_iid():
    onco, trauma = PROFILES["geriatric-oncology"], PROFILES["young-trauma"]
    assert onco.age_mean - trauma.age_mean > 25
    assert onco.contrast_fraction != trauma.contrast_fraction
    assert onco.spacing_mm != trauma.spacing_mm and onco.noise_hu != trauma.noise_hu
    assert trauma.rows_bottom_up and not onco.rows_bottom_up
    for p in PROFILES.values():
        assert 0.6 <= p.spacing_mm[0] and p.spacing_mm[1] <= 0.98
        assert 10.0 <= p.noise_hu[0] and p.noise_hu[1] <= 25.0


def test_unknown_profile_and_bad_values_raise_config_error():
    with pytest.raises(ConfigError, match="geriatric-oncology"):
        get_profile("oncology")
    with pytest.raises(ConfigError, match="male_fraction"):
        PROFILES["general-surgery"].with_overrides(male_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown field"):
        PROFILES["general-surgery"].with_overrides(noise=3)


def test_overrides_accept_lists_for_ranges():
    p = PROFILES["general-surgery"].with_overrides(noise_hu=[12, 14])
    assert p.noise_hu == (12.0, 14.0) and p.name == "general-surgery"


def test_new_scanner_fields_are_validated():
    base = PROFILES["general-surgery"]
    for bad in ({"arterial_share": 1.5}, {"arms_down_fraction": -0.1}, {"hardware_fraction": 2.0}, {"matrix": 100}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            base.with_overrides(**bad)
    with pytest.raises(ConfigError, match="spacing_mm"):
        base.with_overrides(spacing_mm=[1.0, 3.5])
    coarse = base.with_overrides(matrix=256, spacing_mm=[1.2, 1.9])
    assert coarse.matrix == 256 and coarse.spacing_mm == (1.2, 1.9)
    assert PROFILES["young-trauma"].arms_down_fraction > max(
        p.arms_down_fraction for p in PROFILES.values() if p.name != "young-trauma"
    )


def test_phases_follow_contrast_fraction_and_arterial_share():
    rng = np.random.default_rng(0)
    profile = PROFILES["general-surgery"].with_overrides(contrast_fraction=0.6, arterial_share=0.25)
    patients = [sample_patient(rng, profile) for _ in range(2000)]
    phases = np.array([p.phase for p in patients])
    assert all(p.contrast == (p.phase != "none") for p in patients)
    assert set(phases) == {"none", "arterial", "portal"}
    assert np.mean(phases != "none") == pytest.approx(0.6, abs=0.04)
    assert np.mean(phases == "arterial") / np.mean(phases != "none") == pytest.approx(0.25, abs=0.04)
    levels = np.array([p.level for p in patients])
    assert 0.0 <= levels.min() and levels.max() <= 1.0 and abs(levels.mean() - 0.5) < 0.05
    assert np.mean([p.arms_down for p in patients]) == pytest.approx(profile.arms_down_fraction, abs=0.03)


def test_men_have_denser_muscle_than_women_of_the_same_age_and_bmi():
    rng = np.random.default_rng(1)
    profile = PROFILES["general-surgery"].with_overrides(age_sd=0.5, bmi_sd=0.3, age_mean=45.0, bmi_mean=23.0)
    patients = [sample_patient(rng, profile) for _ in range(600)]
    men = np.mean([p.muscle_hu for p in patients if p.sex == "M"])
    women = np.mean([p.muscle_hu for p in patients if p.sex == "F"])
    assert 3.0 <= men - women <= 5.0  # Derstine 2018: about 4 HU
