"""Tokenizer from the model's own files, chat template, and streaming detokenization."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_engine.chat_template import ChatTemplateError
from local_engine.loaders.gguf import open_gguf
from local_engine.loaders.registry import smollm2_gguf_path
from local_engine.tokenizer import IncrementalDetokenizer, Tokenizer

MULTIBYTE = "Hi 👋🏽 世界, naïve café — 🇫🇷 ok 😀😀 中文测试"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_gguf_metadata(open_gguf(smollm2_gguf_path()).metadata)


def test_round_trip_and_special_tokens(tok: Tokenizer) -> None:
    for text in ("Hello, world!", "  leading spaces\nand\ttabs", "digits 12345", MULTIBYTE):
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>user<|im_end|>")[0] == 1
    assert tok.encode("<|im_start|>user<|im_end|>")[-1] == 2
    assert tok.decode([1, 2]) == ""  # special tokens are skipped in output text
    assert 2 in tok.eos_token_ids and tok.bos_token_id == 1


def test_digits_are_split_one_by_one(tok: Tokenizer) -> None:
    # SmolLM2's pre-tokenizer splits numbers into single digits (llama.cpp "smollm" type)
    assert len(tok.encode("12345")) == 5


def test_chat_template_of_smollm2(tok: Tokenizer) -> None:
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                      "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    no_prompt = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert no_prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_template_raise_exception_becomes_chat_template_error(tok: Tokenizer) -> None:
    strict = Tokenizer(tok.backend, bos_token_id=1, eos_token_ids=[2], chat_template=(
        "{% for m in messages %}{% if m['role'] == 'tool' %}"
        "{{ raise_exception('tool messages are not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"))
    assert strict.apply_chat_template([{"role": "user", "content": "x"}]) == "x"
    with pytest.raises(ChatTemplateError, match="tool messages"):
        strict.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(ChatTemplateError):
        Tokenizer(tok.backend, bos_token_id=1, eos_token_ids=[2]).apply_chat_template([])


def test_incremental_detokenizer_never_splits_a_character(tok: Tokenizer) -> None:
    ids = tok.encode(MULTIBYTE)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some tokens are partial characters
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == MULTIBYTE
    assert all("\ufffd" not in p for p in pieces)
    assert sum(1 for p in pieces if p) > 5  # it streams, not one lump at the end


def test_incremental_detokenizer_skips_special_and_flushes_partial(tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tok)
    text = "".join(detok.push(i) for i in [*tok.encode("Paris"), 2])
    assert text + detok.flush() == "Paris"
    partial = IncrementalDetokenizer(tok)
    emoji_ids = tok.encode("😀")
    assert len(emoji_ids) > 1
    assert partial.push(emoji_ids[0]) == ""
    assert partial.flush() == "\ufffd"  # an unfinished character at the very end is reported, not lost


def test_hf_folder_tokenizer(tok: Tokenizer, tmp_path: Path) -> None:
    tok.backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": False,
        "chat_template": "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}"}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    hf_tok = Tokenizer.from_hf_folder(tmp_path)
    assert hf_tok.encode(MULTIBYTE) == tok.encode(MULTIBYTE)
    assert hf_tok.eos_token_ids >= {0, 2} and hf_tok.bos_token_id == 1
    assert hf_tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "[user]hi[assistant]"


def test_logprob_bytes_of_consecutive_tokens_rebuild_the_text(tok: Tokenizer) -> None:
    ids = tok.encode(MULTIBYTE)
    pieces = [tok.token_bytes(i) for i in ids]
    assert b"".join(pieces) == MULTIBYTE.encode()
    split = [i for i in ids if tok.token_text(i) == "\ufffd"]  # tokens holding part of a character
    assert split and all(tok.token_bytes(i) != "\ufffd".encode() for i in split)
    assert tok.token_bytes(2) == b"<|im_end|>"  # a special token is its text


def test_logprob_bytes_of_a_sentencepiece_tokenizer_with_byte_fallback() -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models

    vocab = {"<unk>": 0, "\u2581caf": 1, "<0xC3>": 2, "<0xA9>": 3, "\u2581ok": 4}
    backend = HFTokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse()])
    sp = Tokenizer(backend, bos_token_id=None, eos_token_ids=())
    assert sp.token_text(2) == "\ufffd"
    assert b"".join(sp.token_bytes(i) for i in (1, 2, 3, 4)) == " café ok".encode()


def test_chat_logprobs_bytes_are_the_tokens_raw_bytes(tok: Tokenizer) -> None:
    from local_engine.responses import chat_logprobs
    from local_engine.step_output import TokenLogprobs

    ids = tok.encode("🇫🇷 😀")
    items = chat_logprobs([TokenLogprobs(i, -0.5, ((i, -0.5),)) for i in ids], tok)
    assert bytes(b for item in items for b in item["bytes"]) == "🇫🇷 😀".encode()
    assert any(item["token"] == "\ufffd" for item in items)
    assert all(item["top_logprobs"][0]["bytes"] == item["bytes"] for item in items)
