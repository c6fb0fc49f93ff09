"""SMA, SMI and the named cutoffs against values worked out by hand."""

import numpy as np
import pytest

from common.clinical import area_cm2, bmi, get_cutoff, smi
from common.errors import ConfigError


def test_area_is_pixel_count_times_native_pixel_area():
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:12, 5:25] = 1  # 200 pixels
    assert area_cm2(mask, (0.8, 0.7)) == pytest.approx(200 * 0.8 * 0.7 / 100)


def test_smi_divides_by_height_squared_and_refuses_to_guess():
    assert smi(160.0, 1.6) == pytest.approx(62.5)
    assert smi(160.0, None) is None
    assert smi(160.0, 170.0) is None  # centimetres, not metres


@pytest.mark.parametrize(
    ("rule", "sex", "smi_value", "bmi_value", "expected"),
    [
        pytest.param("prado2008", "M", 52.3, 22.0, True, id="prado-man-below"),
        pytest.param("prado2008", "M", 52.4, 22.0, False, id="prado-man-at-cutoff"),
        pytest.param("prado2008", "F", 38.4, 22.0, True, id="prado-woman-below"),
        pytest.param("martin2013", "M", 50.0, 24.9, False, id="martin-lean-man"),
        pytest.param("martin2013", "M", 50.0, 25.0, True, id="martin-overweight-man"),
        pytest.param("martin2013", "F", 40.9, 30.0, True, id="martin-woman"),
        pytest.param("derstine2018", "female", 34.5, None, False, id="derstine-woman"),
    ],
)
def test_named_cutoffs(rule, sex, smi_value, bmi_value, expected):
    assert get_cutoff(rule).is_sarcopenic(smi_value, sex, bmi_value) is expected


def test_unknown_inputs_give_no_verdict():
    rule = get_cutoff("Prado-2008")
    assert rule.is_sarcopenic(None, "M") is None
    assert rule.is_sarcopenic(40.0, None) is None
    assert rule.is_sarcopenic(40.0, "O") is None


def test_unknown_cutoff_lists_the_known_ones():
    with pytest.raises(ConfigError, match="prado2008, martin2013, derstine2018"):
        get_cutoff("baumgartner")


def test_bmi():
    assert bmi(80.0, 2.0) == pytest.approx(20.0)
    assert bmi(None, 1.8) is None


def test_myosteatosis_by_martin_2013():
    from common.clinical import myosteatosis

    assert myosteatosis(40.0, 24.9)["present"] is True and myosteatosis(41.0, 24.9)["present"] is False
    assert myosteatosis(32.9, 25.0)["present"] is True and myosteatosis(35.0, 25.0)["present"] is False
    assert myosteatosis(35.0, 30.0)["threshold_hu"] == 33.0 and myosteatosis(35.0, 20.0)["threshold_hu"] == 41.0
    unknown = myosteatosis(35.0, None)
    assert unknown["present"] is None and unknown["threshold_hu"] is None and "BMI unknown" in unknown["reason"]
    assert myosteatosis(None, 22.0)["reason"] == "no muscle measured"
