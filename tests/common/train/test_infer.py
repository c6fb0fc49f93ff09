"""Inference input: a plain tensor (no MetaTensor dispatch through the network) with unchanged values."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

from common.data.ctslice import CTSlice, SliceGeometry
from common.metrics.composition import FAT_HEAD, MUSCLE_HEAD, SEG_CHANNELS
from common.models.presets import get_preset
from common.models.sarco import SarcoModel
from common.train.data import image_to_net, net_geometry, normaliser
from common.train.infer import _net_batch, compartment_prob_batch, segment, segment_tissues_batch

TINY = get_preset("tiny")


def _ct(shape=(90, 110), spacing=(3.0, 2.8)) -> CTSlice:
    hu = np.random.default_rng(0).normal(0, 200, shape).astype(np.float32)
    return CTSlice(hu=hu, geometry=SliceGeometry(spacing, (0.0, 0.0, 0.0), shape))


def test_net_batch_is_a_plain_tensor_with_the_normalised_image():
    ct = _ct()
    x, (geom,) = _net_batch([ct], TINY)
    assert type(x) is torch.Tensor and not isinstance(x, MetaTensor)
    assert x.shape == (1, 1, TINY.image_size, TINY.image_size) and x.dtype == torch.float32
    assert geom == net_geometry(ct.shape, ct.spacing_mm, TINY)
    expected = normaliser(TINY)(torch.from_numpy(image_to_net(ct.hu, geom))[None])  # the old path, a MetaTensor
    torch.testing.assert_close(x[0], expected.as_tensor(), rtol=0, atol=0)


def test_segment_returns_native_grid():
    torch.manual_seed(0)
    model = SarcoModel(TINY).eval()
    ct = _ct()
    with torch.inference_mode():
        (prob,) = compartment_prob_batch(model, [ct])
        mask = segment(model, ct)
        ((fascia, tissues),) = segment_tissues_batch(model, [ct])
    assert prob.shape == (SEG_CHANNELS, *ct.shape) and mask.shape == ct.shape and prob.dtype == np.float32
    # each head is a distribution on every native pixel, inside the network's view and outside it
    np.testing.assert_allclose(prob[MUSCLE_HEAD].sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(prob[FAT_HEAD].sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(mask, (prob[1] >= 0.5).astype(np.uint8))  # the muscle head, read as before
    np.testing.assert_array_equal(fascia, mask)
    assert set(np.unique(tissues)) <= {0, 1, 2, 3, 4} and not (tissues[mask == 0] == 1).any()
