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


def test_muscle_only_rows_train_the_muscle_head_alone():
    torch.manual_seed(0)
    muscle_loss = DiceCELoss(softmax=True, include_background=False, lambda_dice=0.0)
    fat_loss = DiceCELoss(softmax=True, include_background=False)
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    fractions = torch.zeros(2, 3, 8, 8)
    fractions[:, 0, 2:6, 2:6] = 1.0  # muscle fascia
    fractions[:, 2, :, :2] = 1.0  # subcutaneous fat
    muscle_only = torch.tensor([False, False])
    seg_loss(muscle_loss, fat_loss, logits, fractions, muscle_only).backward()
    assert logits.grad[:, 2:].abs().sum() == 0 and logits.grad[:, :2].abs().sum() > 0  # fat head untouched
    expected = muscle_loss(logits[:, :2], torch.cat([1 - fractions[:, :1], fractions[:, :1]], dim=1))
    assert torch.allclose(seg_loss(muscle_loss, fat_loss, logits, fractions, muscle_only), expected)
    # A full label map trains both heads, the fat head weighted by the share of such rows.
    one_full = torch.tensor([True, False])
    fat = fractions[:1, 1:]
    other = 1 - fat.sum(dim=1, keepdim=True)
    both = expected + 0.5 * fat_loss(logits[:1, 2:], torch.cat([other, fat], dim=1))
    assert torch.allclose(seg_loss(muscle_loss, fat_loss, logits, fractions, one_full), both)
    # A muscle-only (two-channel) model is scored on muscle whatever the rows say.
    two = logits[:, :2]
    assert torch.allclose(seg_loss(muscle_loss, fat_loss, two, fractions, torch.tensor([True, True])), expected)


def test_the_fat_head_never_changes_what_the_muscle_decoder_learns(tmp_path):
    """Same seed, same data: a body-composition model's encoder and muscle decoder end bit-identical to a
    muscle-only model's, so adding fat cannot make muscle worse."""
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel
    from common.phantom import write_site
    from common.train.loops import train_phase

    manifest = write_site(tmp_path / "site", "s", "general-surgery", 6, 0, seed=4, holdout_fraction=0.0)
    preset = get_preset("tiny")
    trained = []
    for channels in (2, 5):
        torch.manual_seed(0)
        model = SarcoModel(preset, seg_classes=channels)
        train_phase(model, "seg", manifest, epochs=2, seed=3, progress=False)
        trained.append(model.state_dict())
    muscle_only, full = trained
    assert set(full) - set(muscle_only) == {k for k in full if k.startswith("fat_head.")}
    for key, value in muscle_only.items():
        assert torch.equal(value, full[key]), key
