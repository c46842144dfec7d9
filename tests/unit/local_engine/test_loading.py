"""Loading model specs: tiny-random, Hugging Face folders (safetensors), registry errors, SmolLM2."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from local_engine.loaders.gguf import open_gguf
from local_engine.loaders.hf import read_safetensors
from local_engine.loaders.registry import ModelNotFound, resolve_model, smollm2_gguf_path
from local_engine.loaders.tiny_random import tiny_random_tensors
from local_engine.loading import load_engine_model
from local_engine.sequence import Sequence
from local_engine.tokenizer import Tokenizer
from tests.unit.local_engine.helpers import BlockPool, dense_logits, greedy, step

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """The safetensors layout by its spec: u64 header size, JSON header, then raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_safetensors_reader_dtypes(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.tensor([0.5, -2.0], dtype=torch.float16),
               "c": torch.tensor([[1.5, 3.0]], dtype=torch.bfloat16)}
    write_safetensors(tmp_path / "x.safetensors", tensors)
    back = dict(read_safetensors(tmp_path / "x.safetensors"))
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)


def test_tiny_random_is_a_real_engine_model() -> None:
    loaded = load_engine_model("tiny-random:7", device="cpu", kv_cache_bytes=1 << 20)
    assert loaded.model_name == "tiny-random" and loaded.runner.device.type == "cpu"
    assert loaded.runner.num_blocks == (1 << 20) // (loaded.runner.kv_bytes_per_token * 16)
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("assistant\n")
    again = load_engine_model("tiny-random:7", kv_cache_bytes=1 << 20)
    other = load_engine_model("tiny-random:8", kv_cache_bytes=1 << 20)
    ids = loaded.tokenizer.encode("hello there")
    logits = [dense_logits(m.runner.model, ids) for m in (loaded, again, other)]
    assert torch.equal(logits[0], logits[1]) and not torch.equal(logits[0], logits[2])


def _write_hf_folder(folder: Path, seed: int) -> None:
    loaded = load_engine_model("tiny-random", kv_cache_bytes=1 << 20)
    cfg = loaded.model_config
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "max_position_embeddings": 512,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}))
    tensors = tiny_random_tensors(cfg, seed)
    names = sorted(tensors)
    write_safetensors(folder / "model-00001-of-00002.safetensors", {n: tensors[n] for n in names[:5]})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {n: tensors[n] for n in names[5:]})
    loaded.tokenizer.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": loaded.tokenizer.chat_template}))


def test_hf_folder_loads_the_same_model(tmp_path: Path) -> None:
    _write_hf_folder(tmp_path / "tiny-hf", seed=3)
    from_hf = load_engine_model(str(tmp_path / "tiny-hf"), dtype="fp32", kv_cache_bytes=1 << 20)
    reference = load_engine_model("tiny-random:3", kv_cache_bytes=1 << 20)
    assert from_hf.model_name == "tiny-hf" and from_hf.max_model_len == 512
    assert from_hf.tokenizer.eos_token_ids >= {2}
    ids = from_hf.tokenizer.encode("The quick brown fox")
    assert ids == reference.tokenizer.encode("The quick brown fox")
    torch.testing.assert_close(dense_logits(from_hf.runner.model, ids), dense_logits(reference.runner.model, ids))


def test_registry_resolves_and_explains() -> None:
    assert resolve_model("smollm2").path == smollm2_gguf_path()
    assert resolve_model("tiny-random:12").seed == 12
    with pytest.raises(ModelNotFound, match="tiny-random seed"):
        resolve_model("tiny-random:x")
    with pytest.raises(ModelNotFound, match="never downloads"):
        resolve_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelNotFound, match="not found"):
        resolve_model("/definitely/not/here.gguf")


def test_max_model_len_and_dtype_overrides() -> None:
    loaded = load_engine_model("tiny-random", dtype="bf16", kv_dtype="fp32", max_model_len=256,
                               kv_cache_bytes=1 << 20, block_size=8)
    assert loaded.max_model_len == 256 and loaded.runner.block_size == 8
    assert loaded.runner.dtype == torch.bfloat16 and loaded.runner.kv_cache.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        load_engine_model("tiny-random", dtype="int3")


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france() -> None:
    loaded = load_engine_model("smollm2", kv_cache_bytes=64 << 20)
    tok = loaded.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    seq = Sequence(tok.encode(prompt), greedy(max_tokens=20))
    pool = BlockPool(loaded.runner.num_blocks)
    step(loaded.runner, pool, [seq], [seq.num_tokens], is_prefill=True)
    while seq.token_ids[-1] not in tok.eos_token_ids and seq.num_completion_tokens < 20:
        step(loaded.runner, pool, [seq], [1], is_prefill=False)
    answer = tok.decode(seq.completion_token_ids)
    assert "Paris" in answer, answer
    assert seq.token_ids[-1] in tok.eos_token_ids  # it ends its turn by itself


def test_smollm2_gguf_metadata_reads_fast_and_complete() -> None:
    md = open_gguf(smollm2_gguf_path()).metadata
    assert md["llama.block_count"] == 30 and len(md["tokenizer.ggml.tokens"]) == 49152
    assert isinstance(Tokenizer.from_gguf_metadata(md).chat_template, str)
