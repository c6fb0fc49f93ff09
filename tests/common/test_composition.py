"""Body composition: compartments <-> tissues by the Alberta windows, label maps on disk, the partial-label loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from common.clinical import IMAT, MUSCLE, SAT, VAT
from common.data.mask_io import as_label_map, is_tissue_map, muscle_of
from common.errors import InputDataError
from common.metrics import sma_cm2
from common.metrics.composition import (
    FASCIA,
    OTHER,
    SUBCUTANEOUS,
    VISCERAL,
    compartments_of,
    composition,
    tissues_from_compartments,
)
from common.phantom.case import synth_case
from common.phantom.profiles import get_profile
from common.train.loops import seg_loss


@pytest.fixture(scope="module")
def case():
    return synth_case((3, 1), get_profile("general-surgery"))


def test_windows_split_compartments_into_tissues():
    hu = np.array([[40.0, -80.0, -100.0, -40.0, -100.0, 200.0]])
    comp = np.array([[FASCIA, FASCIA, VISCERAL, VISCERAL, SUBCUTANEOUS, FASCIA]])
    # muscle, IMAT, VAT, -40 HU is outside the VAT window, SAT, bone inside the fascia is nothing
    assert tissues_from_compartments(comp, hu).tolist() == [[MUSCLE, IMAT, VAT, 0, SAT, 0]]
    assert compartments_of(np.array([[MUSCLE, IMAT, VAT, SAT, 0]])).tolist() == [
        [FASCIA, FASCIA, VISCERAL, SUBCUTANEOUS, OTHER]
    ]


def test_the_phantom_label_map_is_its_own_tissues_after_the_round_trip(case):
    labels = case.tissue_map
    assert set(np.unique(labels)) == {0, MUSCLE, IMAT, VAT, SAT}
    # The phantom draws tissues by outline and window: re-deriving them from the outlines changes nothing.
    assert np.array_equal(tissues_from_compartments(compartments_of(labels), case.hu), labels)
    values = composition(labels, case.hu, case.spacing_mm)
    assert values["muscle_cm2"] == pytest.approx(case.sma_cm2)
    assert values["vat_cm2"] == pytest.approx(case.vat_cm2) and values["sat_cm2"] == pytest.approx(case.sat_cm2)
    assert values["imat_cm2"] == pytest.approx(case.imat_cm2) and case.imat_cm2 > 0
    assert values["imat_hu_mean"] == pytest.approx(case.hu[case.imat > 0].mean())
    assert -190 <= values["sat_hu_mean"] <= -30 and -150 <= values["vat_hu_mean"] <= -50
    assert sma_cm2(labels, case.spacing_mm) == pytest.approx(case.sma_cm2)  # SMA counts muscle, not fat
    muscle_only = composition(case.muscle, case.hu, case.spacing_mm, tissues=False)
    assert muscle_only["muscle_cm2"] == pytest.approx(case.sma_cm2) and muscle_only["vat_cm2"] is None


def test_label_maps_and_muscle_masks_are_told_apart():
    assert is_tissue_map(np.array([[0, 1, 2, 3, 4]], np.uint8))
    assert not is_tissue_map(np.array([[0, 1]], np.uint8))  # muscle only: fat not drawn
    assert as_label_map(np.array([[0, 255]]), None).tolist() == [[0, 1]]  # any one value marks muscle
    assert as_label_map(np.array([[0, 3]]), None).tolist() == [[0, VAT]]  # one fat tissue stays that tissue
    assert as_label_map(np.array([[0.0, 0.25, 0.75]]), None).tolist() == [[0, 0, 1]]  # a muscle fraction
    assert muscle_of(np.array([[1, 2, 4]])).tolist() == [[1, 0, 0]]
    with pytest.raises(InputDataError, match="neither a muscle mask"):
        as_label_map(np.array([[0, 5, 7]]), None)


def test_muscle_only_rows_score_the_marginal_muscle_probability():
    torch.manual_seed(0)
    loss_fn = DiceCELoss(softmax=True, include_background=False)
    logits = torch.randn(2, 4, 8, 8)
    fractions = torch.zeros(2, 3, 8, 8)
    fractions[:, 0, 2:6, 2:6] = 1.0
    partial = torch.tensor([False, False])
    # Moving probability between the non-muscle classes changes nothing for a muscle-only row ...
    moved = logits.clone()
    moved[:, 0], moved[:, 2], moved[:, 3] = logits[:, 3], logits[:, 0], logits[:, 2]
    assert torch.allclose(seg_loss(loss_fn, logits, fractions, partial), seg_loss(loss_fn, moved, fractions, partial))
    # ... but a full label map scores every class.
    full = torch.tensor([True, True])
    assert not torch.allclose(seg_loss(loss_fn, logits, fractions, full), seg_loss(loss_fn, moved, fractions, full))
    # A two-class (muscle-only) model is scored on muscle alone whatever the rows say.
    two = logits[:, :2]
    expected = loss_fn(two, torch.cat([1 - fractions[:, :1], fractions[:, :1]], dim=1))
    assert torch.allclose(seg_loss(loss_fn, two, fractions, full), expected)
