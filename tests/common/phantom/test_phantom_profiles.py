"""Site profiles: validated at construction, differing where sites really differ."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.phantom import PROFILES, get_profile


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
