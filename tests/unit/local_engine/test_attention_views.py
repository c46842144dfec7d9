"""The batch-1 shortcuts (single-token attention on a view of q, RoPE's swap by roll) compute what the
general path computed, bit for bit."""
from __future__ import annotations

import torch

from local_engine.attention import build_attention_metadata, paged_attention
from local_engine.model import rope_


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
