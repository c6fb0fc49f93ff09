"""Presets: lookup, validation, dict round trip."""

import pytest

from common.errors import ConfigError
from common.models.presets import PRESETS, Preset, get_preset


def test_get_preset_known_names():
    assert get_preset("tiny").image_size == 64
    full = get_preset("full")
    assert (full.image_size, full.hidden_size, full.num_layers, full.num_heads, full.patch_size) == (
        512,
        768,
        12,
        12,
        16,
    )
    # Each preset's field of view covers an adult abdomen at L3 (about 400 mm).
    for p in PRESETS.values():
        assert 380 <= p.field_of_view_mm <= 480


def test_unknown_preset_lists_names():
    with pytest.raises(ConfigError, match="tiny, demo, full"):
        get_preset("huge")


def test_bad_patch_rejected():
    with pytest.raises(ConfigError, match="power of two"):
        Preset.from_dict({**get_preset("tiny").to_dict(), "patch_size": 12, "image_size": 72})


def test_dict_round_trip():
    p = get_preset("demo")
    assert Preset.from_dict(p.to_dict()) == p
