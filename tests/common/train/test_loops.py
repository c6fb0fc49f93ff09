"""The three loops learn on a tiny site; SSL moves the EMA teacher; encoders carry across phases; FedProx pulls back."""

import numpy as np
import pytest
import torch

from common.data.manifest import load_case, read_manifest
from common.models.checkpoint import load_checkpoint, save_checkpoint
from common.models.presets import get_preset
from common.models.sarco import SarcoModel
from common.train.data import SliceDataset
from common.train.infer import classify, segment, segment_batch
from common.train.loops import train_phase

TINY = get_preset("tiny")


def _model(seed=0):
    torch.manual_seed(seed)
    return SarcoModel(TINY)


@pytest.mark.parametrize("phase,epochs", [("ssl", 4), ("seg", 8), ("cls", 8)])
def test_loss_decreases(ring_site, phase, epochs):
    model = _model()
    result = train_phase(model, phase, ring_site, epochs=epochs, seed=0, progress=False)
    assert result["num-examples"] == (16 if phase == "ssl" else 12)  # slices, not batches
    assert result["loss"] < result["loss-first"]
    assert np.isfinite(result["loss"])


def test_ssl_moves_teacher_by_ema(ring_site):
    model = _model()
    teacher0 = {k: v.clone() for k, v in model.teacher_encoder.state_dict().items()}
    train_phase(model, "ssl", ring_site, epochs=1, seed=0, progress=False)
    t1 = model.teacher_encoder.state_dict()
    s1 = model.encoder.state_dict()
    key = "vit.blocks.0.mlp.linear1.weight"
    assert not torch.equal(t1[key], teacher0[key])  # teacher moved
    assert not torch.equal(t1[key], s1[key])  # ... but lags the student
    assert model.center_cls.abs().sum() > 0  # centre updated


def test_seeded_runs_repeat(ring_site):
    a, b = _model(), _model()
    ra = train_phase(a, "seg", ring_site, epochs=1, seed=7, progress=False)
    rb = train_phase(b, "seg", ring_site, epochs=1, seed=7, progress=False)
    assert ra["loss"] == rb["loss"]


def test_encoder_carries_ssl_to_seg(ring_site, tmp_path):
    model = _model()
    train_phase(model, "ssl", ring_site, epochs=1, seed=0, progress=False)
    path = save_checkpoint(tmp_path / "ssl.pt", model, phase="ssl")
    seg_model, info = load_checkpoint(path)
    assert info["phase"] == "ssl"
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(seg_model.encoder.state_dict()[k], v), k
    before = seg_model.encoder.state_dict()["vit.blocks.0.attn.qkv.weight"].clone()
    train_phase(seg_model, "seg", ring_site, epochs=1, seed=0, progress=False)
    assert not torch.equal(seg_model.encoder.state_dict()["vit.blocks.0.attn.qkv.weight"], before)


def test_fedprox_keeps_weights_near_start(ring_site):
    free, prox = _model(), _model()
    start = free.decoder.out.conv.conv.weight.detach().clone()
    train_phase(free, "seg", ring_site, epochs=2, seed=0, progress=False)
    train_phase(prox, "seg", ring_site, epochs=2, seed=0, progress=False, prox_mu=100.0)
    d_free = (free.decoder.out.conv.conv.weight - start).norm()
    d_prox = (prox.decoder.out.conv.conv.weight - start).norm()
    assert d_prox < d_free


def test_max_steps(ring_site):
    result = train_phase(_model(), "seg", ring_site, epochs=5, seed=0, progress=False, max_steps=2)
    assert result["steps"] == 2


def test_segment_and_classify_on_native_grid(ring_site):
    model = _model()
    ds = SliceDataset(ring_site, TINY, "seg", seed=0)
    train_phase(model, "seg", ds, epochs=10, seed=0, progress=False)
    df = read_manifest(ring_site)
    cts = [load_case(r)[0] for _, r in df[df["split"] == "holdout"].iterrows()]
    mask = segment(model, cts[0])
    assert mask.shape == cts[0].hu.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert [m.shape for m in segment_batch(model, cts)] == [c.hu.shape for c in cts]
    p = classify(model, cts[0])
    assert 0.0 <= p <= 1.0


def test_classifier_leaves_the_segmentation_encoder_alone(ring_site):
    model = _model()
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head = [p.detach().clone() for p in model.cls_head.parameters()]
    train_phase(model, "cls", ring_site, epochs=2, seed=0, progress=False)
    assert all(torch.equal(encoder[k], v) for k, v in model.encoder.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(head, model.cls_head.parameters(), strict=True))
    # the next phase trains the encoder again: nothing stays frozen after the call
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_seg_loss_is_cross_entropy_plus_weighted_dice(ring_site):
    """Same start, same first batch: the loss is linear in the preset's Dice weight (0 = cross-entropy only)."""
    import dataclasses

    first = {}
    for w in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        model = SarcoModel(dataclasses.replace(TINY, seg_dice_weight=w))
        first[w] = train_phase(model, "seg", ring_site, epochs=1, max_steps=1, seed=3, progress=False)["loss"]
    assert first[0.0] < first[1.0]
    assert first[0.5] == pytest.approx((first[0.0] + first[1.0]) / 2, rel=1e-5)
