"""The encoder's fused attention: same maths as MONAI's einsum path, same state_dict, so checkpoints load."""

import copy

import torch
from monai.networks.nets import ViT

from common.models.encoder import Encoder
from common.models.presets import get_preset

TINY = get_preset("tiny")


def _einsum_twin(enc: Encoder) -> Encoder:
    twin = copy.deepcopy(enc)
    for block in twin.vit.blocks:
        block.attn.use_flash_attention = False
    return twin


def test_blocks_use_fused_attention_without_dropout() -> None:
    enc = Encoder(TINY)
    assert all(b.attn.use_flash_attention and b.attn.dropout_rate == 0.0 for b in enc.vit.blocks)


def test_state_dict_keys_are_monai_vit_plus_three_tokens() -> None:
    vit = ViT(
        in_channels=1,
        img_size=(TINY.image_size,) * 2,
        patch_size=(TINY.patch_size,) * 2,
        hidden_size=TINY.hidden_size,
        mlp_dim=TINY.mlp_dim,
        num_layers=TINY.num_layers,
        num_heads=TINY.num_heads,
        spatial_dims=2,
        qkv_bias=True,
    )
    want = {f"vit.{k}" for k in vit.state_dict()} | {"cls_token", "cls_pos", "mask_token"}
    enc = Encoder(TINY)
    assert set(enc.state_dict()) == want
    # A state_dict saved from the einsum-path encoder loads strictly.
    enc.load_state_dict(_einsum_twin(Encoder(TINY)).state_dict(), strict=True)


def test_fused_attention_matches_einsum_path_forward_and_backward() -> None:
    torch.manual_seed(0)
    enc = Encoder(TINY)
    twin = _einsum_twin(enc)
    x = torch.randn(3, 1, TINY.image_size, TINY.image_size)
    mask = torch.rand(3, TINY.grid**2) < 0.4
    for m in (None, mask):
        tokens, glob, hidden = enc(x, m)
        tokens_r, glob_r, hidden_r = twin(x, m)
        torch.testing.assert_close(tokens, tokens_r, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(glob, glob_r, rtol=1e-4, atol=1e-5)
        for h, h_r in zip(hidden, hidden_r, strict=True):
            torch.testing.assert_close(h, h_r, rtol=1e-4, atol=1e-5)
    # A random linear read-out (a sum of squares after LayerNorm would have a gradient of ~0, all rounding).
    w, w_glob = torch.randn_like(tokens), torch.randn_like(glob)
    ((tokens * w).sum() + (glob * w_glob).sum()).backward()
    ((tokens_r * w).sum() + (glob_r * w_glob).sum()).backward()
    for (name, p), p_r in zip(enc.named_parameters(), twin.parameters(), strict=True):
        if p_r.grad is None:  # MONAI's unused cross-attention norms
            assert p.grad is None, name
            continue
        torch.testing.assert_close(p.grad, p_r.grad, rtol=1e-4, atol=1e-5 * float(p_r.grad.abs().max()), msg=name)


def test_eval_mode_is_deterministic() -> None:
    enc = Encoder(TINY).eval()
    x = torch.randn(2, 1, TINY.image_size, TINY.image_size)
    with torch.no_grad():
        assert torch.equal(enc(x)[0], enc(x)[0])
