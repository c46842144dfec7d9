"""GGUF: dequantisation of every supported block type, and a written GGUF loads back exactly."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from local_engine.loaders import gguf as gguf_loader
from local_engine.loaders import weight_cache
from local_engine.loaders.gguf_quants import dequantize
from local_engine.loaders.gguf_reader import read_gguf
from local_engine.loaders.registry import smollm2_gguf_path
from local_engine.loaders.tiny_random import tiny_random_config, tiny_random_tensors
from local_engine.loading import load_engine_model
from local_engine.model import build_model
from local_engine.weights import fuse_hf_state_dict, linear
from tests.unit.local_engine.helpers import dense_logits

Q = gguf.GGMLQuantizationType
# byte offsets of the fp16 scale fields inside one block, which random bytes could make inf/nan
FP16_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q4_K: [0, 2], Q.Q6_K: [208]}


@pytest.mark.parametrize("qtype", list(FP16_FIELDS), ids=lambda q: q.name)
def test_dequant_matches_gguf_reference_on_random_blocks(qtype: Q) -> None:
    rng = np.random.default_rng(int(qtype))
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (48, block_bytes), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        raw[:, off:off + 2] = rng.uniform(-2, 2, 48).astype(np.float16).view(np.uint8).reshape(48, 2)
    ours = dequantize(raw, int(qtype), (48 * block_elems,))
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(raw, qtype).reshape(-1))


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16, Q.BF16, Q.F32], ids=lambda q: q.name)
def test_quantised_real_values_round_trip(qtype: Q) -> None:
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    packed = x if qtype == Q.F32 else gguf.quants.quantize(x, qtype)
    ours = dequantize(packed.view(np.uint8), int(qtype), x.shape)
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(packed, qtype).reshape(x.shape))
    assert np.abs(ours - x).max() < {Q.Q4_0: 0.5, Q.Q4_1: 0.5}.get(qtype, 0.05)


def test_hand_built_q4_k_block() -> None:
    block = np.zeros(144, dtype=np.uint8)
    block[0:2] = np.array([1.0], dtype=np.float16).view(np.uint8)  # d
    block[2:4] = np.array([0.5], dtype=np.float16).view(np.uint8)  # dmin
    block[4:8] = 1  # scales of sub-blocks 0-3
    block[8:12] = 2  # mins of sub-blocks 0-3
    block[12:16] = 0x23  # sub-blocks 4-7: scale 3, min 2 (low/high nibbles)
    block[16:144] = 0x51  # every byte: low nibble 1, high nibble 5
    out = dequantize(block, int(Q.Q4_K), (256,))
    # sub-block j: d*scale_j*q - dmin*min_j; even j use low nibbles (1), odd j high nibbles (5)
    expected = [1 * 1 - 1.0, 1 * 5 - 1.0] * 2 + [3 * 1 - 1.0, 3 * 5 - 1.0] * 2
    np.testing.assert_array_equal(out.reshape(8, 32), np.repeat(np.array(expected)[:, None], 32, axis=1))


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's LlamaModel.permute (HF rotate-half rows -> interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny_gguf(path: Path, seed: int = 0, matrices: Q = Q.F32, embedding: Q = Q.F32) -> dict[str, torch.Tensor]:
    """A tiny llama GGUF with SmolLM2's tokenizer; returns the HF-layout weights it holds."""
    md, _ = read_gguf(smollm2_gguf_path())
    config = tiny_random_config(len(md["tokenizer.ggml.tokens"]), 1, (2,))
    hf = tiny_random_tensors(config, seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(config.num_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(md["tokenizer.ggml.pre"])
    w.add_token_list(md["tokenizer.ggml.tokens"])
    w.add_token_types(md["tokenizer.ggml.token_type"])
    w.add_token_merges(md["tokenizer.ggml.merges"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(md["tokenizer.chat_template"])
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, tensor in hf.items():
        array = tensor.numpy()
        if name in names:
            if embedding != Q.F32 and name == "model.embed_tokens.weight":
                w.add_tensor(names[name], gguf.quants.quantize(array, embedding), raw_dtype=embedding)
            else:
                w.add_tensor(names[name], array)
            continue
        i, rest = name.removeprefix("model.layers.").split(".", 1)
        part = rest.removesuffix(".weight")
        if part == "self_attn.q_proj":
            array = _permute(array, config.num_heads)
        elif part == "self_attn.k_proj":
            array = _permute(array, config.num_kv_heads)
        array = np.ascontiguousarray(array)
        if matrices != Q.F32 and array.ndim == 2:
            w.add_tensor(f"blk.{i}.{layer[part]}.weight", gguf.quants.quantize(array, matrices), raw_dtype=matrices)
            continue
        w.add_tensor(f"blk.{i}.{layer[part]}.weight", array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, _write_tiny_gguf(path)


def test_written_gguf_loads_back_with_rope_rows_unpermuted(tiny_gguf: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, hf = tiny_gguf
    model = gguf_loader.open_gguf(path)
    config = gguf_loader.model_config(model)
    assert (config.num_layers, config.num_heads, config.num_kv_heads, config.head_dim) == (2, 4, 2, 16)
    assert config.tie_word_embeddings and not config.attention_bias
    loaded = {name: torch.from_numpy(a) for name, a in gguf_loader.iter_state_dict(model, config)}
    assert loaded.keys() == hf.keys()
    for name, tensor in hf.items():
        torch.testing.assert_close(loaded[name], tensor, atol=0, rtol=0)
    # and so the model computes the same logits as from the original weights
    a = build_model(config, fuse_hf_state_dict(config, loaded), dtype=torch.float32, device="cpu")
    b = build_model(config, fuse_hf_state_dict(config, hf), dtype=torch.float32, device="cpu")
    ids = [5, 900, 42, 7, 1234]
    torch.testing.assert_close(dense_logits(a, ids), dense_logits(b, ids))


def test_second_load_reads_the_weight_cache(tiny_gguf: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDGW_CACHE_DIR", str(tmp_path / "cache"))
    path = Path(shutil.copy(tiny_gguf[0], tmp_path / "tiny.gguf"))
    first = load_engine_model(str(path), dtype="fp32", kv_cache_bytes=1 << 20)
    key = weight_cache.cache_key(path, torch.float32)
    cached = weight_cache.load(key)
    assert cached is not None and torch.equal(cached["norm"], first.runner.model.norm.detach())
    # a cache entry is what the next start uses: change it and the model follows
    weight_cache.store(key, {**cached, "norm": cached["norm"] * 2})
    second = load_engine_model(str(path), dtype="fp32", kv_cache_bytes=1 << 20)
    assert torch.equal(second.runner.model.norm.detach(), first.runner.model.norm.detach() * 2)
    # touching the file changes its key, so stale entries are never used
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = load_engine_model(str(path), dtype="fp32", kv_cache_bytes=1 << 20)
    assert torch.equal(third.runner.model.norm.detach(), first.runner.model.norm.detach())
    assert [p.name for p in (tmp_path / "cache" / "weights").iterdir()] == [f"{weight_cache.cache_key(path, torch.float32)}.pt"]


def test_not_a_gguf_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(gguf_loader.GGUFError, match="not a GGUF"):
        gguf_loader.open_gguf(bad)


def test_4bit_matrices_keep_the_files_codes_for_small_batch_matmuls(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDGW_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "q4.gguf"
    _write_tiny_gguf(path, seed=2, matrices=Q.Q4_1)
    exact = load_engine_model(str(path), dtype="fp32", kv_cache_bytes=1 << 20).runner.model
    fast = load_engine_model(str(path), dtype="bf16", kv_cache_bytes=1 << 20).runner.model
    for layer, ref in zip(fast.decoder_layers, exact.decoder_layers):
        assert set(layer.int4_codes) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
        q, scale, zero = layer.int4_codes["qkv_proj"]  # rows already un-permuted like the float weights
        codes = (q.float() - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
        torch.testing.assert_close(codes, ref.qkv_proj.weight, atol=0, rtol=0)
    first, first_ref = fast.decoder_layers[0], exact.decoder_layers[0]
    if first.int4:  # this CPU runs the int4 kernel: one row through it matches fp32 closely
        x = torch.randn(1, 64, dtype=torch.bfloat16)
        out = linear(x, first.gate_up_proj.weight, None, None, first.int4["gate_up_proj"])
        torch.testing.assert_close(out.float(), x.float() @ first_ref.gate_up_proj.weight.t(), atol=0.05, rtol=0.02)


def test_a_q8_0_head_keeps_the_files_codes_as_two_4bit_halves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDGW_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "q8head.gguf"
    _write_tiny_gguf(path, seed=4, embedding=Q.Q8_0)  # tied: the embedding is the head, as in SmolLM2
    exact = load_engine_model(str(path), dtype="fp32", kv_cache_bytes=1 << 20).runner.model
    fast = load_engine_model(str(path), dtype="bf16", kv_cache_bytes=1 << 20).runner.model
    assert fast.head_int4_codes is not None
    q, scale, zero = fast.head_int4_codes
    halves = (q.double() - 8) * scale.double().repeat_interleave(32, 1) + zero.double().repeat_interleave(32, 1)
    vocab = exact.embed_tokens.weight.shape[0]
    assert torch.equal((halves[:vocab] + halves[vocab:]).float(), exact.embed_tokens.weight)
