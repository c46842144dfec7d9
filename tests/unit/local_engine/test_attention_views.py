"""The batch-1 shortcuts of the paged attention (joint K/V view, single-token SDPA) compute what the
general path computes, bit for bit."""
from __future__ import annotations

import torch

from local_engine.attention import _adjacent, build_attention_metadata, paged_attention, write_kv
from local_engine.model import rope_


def test_kv_written_from_a_fused_qkv_view_equals_separate_tensors() -> None:
    qkv = torch.randn(3, 4 + 2 + 2, 8)  # T=3, H=4, KVH=2, D=8
    k, v = qkv[:, 4:6], qkv[:, 6:8]
    assert _adjacent(k, v) is not None and _adjacent(v, k) is None
    assert _adjacent(qkv[:, 4:6], qkv[:, 5:7]) is None  # overlapping heads are not K then V
    joint, split = torch.zeros(4, 5, 2, 8), torch.zeros(4, 5, 2, 8)
    slots = torch.tensor([7, 2, 4])
    stored = write_kv(joint, k, v, slots)
    write_kv(split, k.clone(), v.clone(), slots)
    assert torch.equal(joint, split)
    assert torch.equal(stored, torch.cat([k, v], dim=1).transpose(0, 1))


def test_single_token_attention_equals_the_batched_layout() -> None:
    H, KVH, D, bs = 6, 2, 16, 4
    cache = torch.randn(2 * KVH, 16, bs, D, dtype=torch.bfloat16)
    q = torch.randn(1, H, D, dtype=torch.bfloat16)
    meta = build_attention_metadata([[5, 1, 9]], [9], [1], block_size=bs, num_heads=H, num_kv_heads=KVH,
                                    dtype=torch.bfloat16, device=torch.device("cpu"))
    # a second, identical sequence forces the general (B=2) layout; its first row must match
    meta2 = build_attention_metadata([[5, 1, 9], [5, 1, 9]], [9, 9], [1, 1], block_size=bs, num_heads=H,
                                     num_kv_heads=KVH, dtype=torch.bfloat16, device=torch.device("cpu"))
    one = paged_attention(q, cache, meta)
    two = paged_attention(torch.cat([q, q]), cache, meta2)
    assert one.shape == (1, H, D)
    assert torch.equal(one[0], two[0])


def test_rope_rotates_half_as_before() -> None:
    x = torch.randn(2, 3, 8)
    cos, sin = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    expected = x.clone().mul_(cos).addcmul_(torch.cat([x[..., 4:], x[..., :4]], dim=-1), sin)  # the old form
    rope_(x, cos, sin)
    assert torch.equal(x, expected)
