"""SarcoModel parts: masking, decoder taps, exchange keys and get/set weights."""

import dataclasses

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from common.metrics.composition import SEG_CHANNELS
from common.models.decoder import skip_taps
from common.models.presets import get_preset
from common.models.sarco import SarcoModel, exchange_keys, get_weights, set_weights, trainable_parameters
from common.models.ssl import patchify, random_patch_mask

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SarcoModel(TINY).eval()


def test_skip_taps_spread_over_actual_depth():
    assert skip_taps(12, 3) == [2, 5, 8]
    assert skip_taps(6, 3) == [1, 2, 3]
    assert skip_taps(3, 2) == [0, 1]
    assert all(t < 6 for t in skip_taps(6, 3))


@pytest.mark.parametrize("patch", [8, 16], ids=["patch8", "patch16"])
def test_output_shapes(patch):
    p = dataclasses.replace(TINY, patch_size=patch, image_size=64)
    m = SarcoModel(p)
    x = torch.randn(2, 1, 64, 64)
    assert m.segment_logits(x).shape == (2, SEG_CHANNELS, 64, 64)
    assert SarcoModel(p, seg_classes=2).segment_logits(x).shape == (2, 2, 64, 64)  # muscle only
    assert m.classify_logits(x).shape == (2, 2)


def test_masked_patches_are_replaced(model):
    """Changing pixels inside masked patches changes nothing: the encoder never sees them."""
    x = torch.rand(1, 1, 64, 64)
    mask = torch.zeros(1, TINY.grid**2, dtype=torch.bool)
    mask[0, 0] = True  # top-left 8x8 patch
    y = x.clone()
    y[..., :8, :8] = torch.rand(8, 8)
    with torch.no_grad():
        tx, gx, _ = model.encoder(x, mask)
        ty, gy, _ = model.encoder(y, mask)
        tu, _, _ = model.encoder(y)  # unmasked: the change is visible
    assert torch.allclose(tx, ty, atol=1e-6) and torch.allclose(gx, gy, atol=1e-6)
    assert not torch.allclose(tx, tu, atol=1e-4)


def test_random_patch_mask_ratio():
    m = random_patch_mask(4, 64, 0.5, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.sum(dim=1).tolist() == [32] * 4
    assert not torch.equal(m[0], m[1])


def test_patchify_order_matches_tokens():
    x = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    p = patchify(x, 8)
    assert p.shape == (1, 64, 64)
    assert torch.equal(p[0, 1], x[0, 0, :8, 8:16].reshape(-1))  # second token = patch right of the first


def test_exchange_keys_per_phase(model):
    ssl, seg, cls = (exchange_keys(model, ph) for ph in ("ssl", "seg", "cls"))
    assert model.exchange_keys("seg") == seg
    enc = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert set(enc) <= set(ssl) & set(seg)
    assert not any(k.startswith("encoder.") for k in cls)  # the classifier never moves the encoder
    assert any(k.startswith("teacher_encoder.") for k in ssl) and "center_cls" in ssl
    assert any(k.startswith("decoder.") for k in seg) and not any(k.startswith("decoder.") for k in cls)
    assert any(k.startswith("cls_head.") for k in cls)
    # the optimiser never touches the teacher
    names = {id(p): n for n, p in model.named_parameters()}
    assert not any(names[id(p)].startswith("teacher_") for p in trainable_parameters(model, "ssl"))
    with pytest.raises(ConfigError, match="ssl, seg, cls"):
        exchange_keys(model, "pretrain")


def test_densenet_exchange_has_no_integer_counters():
    m = SarcoModel(TINY, classifier="densenet")
    keys = exchange_keys(m, "cls")
    assert keys and all(k.startswith("densenet.") for k in keys)
    assert not any("num_batches_tracked" in k for k in keys)
    assert m.classify_logits(torch.randn(2, 1, 64, 64)).shape == (2, 2)


@pytest.mark.parametrize("phase", ["ssl", "seg", "cls"])
def test_get_set_weights_round_trip(phase):
    torch.manual_seed(1)
    a = SarcoModel(TINY)
    torch.manual_seed(2)
    b = SarcoModel(TINY)
    arrays = get_weights(a, phase)
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in arrays)
    set_weights(b, phase, arrays)
    sa, sb = a.state_dict(), b.state_dict()
    for k in exchange_keys(a, phase):
        assert torch.equal(sa[k], sb[k]), k
    other = [k for k in sa if k not in exchange_keys(a, phase) and sa[k].is_floating_point()]
    assert any(not torch.equal(sa[k], sb[k]) for k in other)  # only the phase's keys moved
    with pytest.raises(ConfigError, match="expected"):
        set_weights(b, phase, arrays[:-1])


def test_image_skips_feed_every_decoder_stage_and_train():
    """The convolutional image path reaches the output (its weights get gradients) and backward runs."""
    torch.manual_seed(0)
    m = SarcoModel(dataclasses.replace(TINY, image_skips=True, batch_size=4))
    assert m.decoder.image_path is not None and len(m.decoder.image_path) == 2  # patch 8: stages 1 and 2
    x = torch.randn(4, 1, 64, 64)
    m.segment_logits(x)[:, 1].mean().backward()
    grads = [p.grad for p in m.decoder.image_path.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert SarcoModel(TINY).decoder.image_path is None  # presets without it keep their old checkpoints' keys
    assert any(k.startswith("decoder.image_path.") for k in exchange_keys(m, "seg"))
