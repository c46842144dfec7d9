"""Build a ``tokenizers`` BPE tokenizer from a GGUF file's tokenizer.ggml.* metadata.

Byte-level BPE ("gpt2" model) only; the pre-tokenizer split follows llama.cpp's table for
tokenizer.ggml.pre, so ids match what the model was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DIGIT_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_GPT2_LIKE = ("gpt2", "default", "gpt-2", "mpt", "olmo", "jais")
_LLAMA3_LIKE = ("llama-bpe", "llama3", "dbrx", "smaug-bpe")
_QWEN2_LIKE = ("qwen2", "stablelm2", "deepseek-r1-qwen")

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
# Names of end-of-turn / end-of-text control tokens across model families.
STOP_TOKEN_TEXTS = frozenset({"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>",
                              "</s>", "<|end|>", "<end_of_turn>"})


class GGUFTokenizerError(ValueError):
    """The GGUF's tokenizer kind is not one this engine can rebuild."""


@dataclass(frozen=True)
class GGUFTokenizerParts:
    backend: HFTokenizer
    bos_token_id: int | None
    eos_token_ids: frozenset[int]
    add_bos_token: bool
    chat_template: str | None
    special_ids: frozenset[int]


def _pre_tokenizer(pre: str) -> Any:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in _DIGIT_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in _GPT2_LIKE:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = {**dict.fromkeys(_LLAMA3_LIKE, _LLAMA3_SPLIT), **dict.fromkeys(_QWEN2_LIKE, _QWEN2_SPLIT)}.get(pre)
    if split is None:
        raise GGUFTokenizerError(f"GGUF pre-tokenizer {pre!r} is not supported; use a Hugging Face folder")
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])


def build_gguf_tokenizer(md: dict[str, Any]) -> GGUFTokenizerParts:
    """tokenizer.ggml.* metadata (plain values) -> a ready tokenizer and its special ids."""
    kind = md.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFTokenizerError(f"GGUF tokenizer model {kind!r} is not supported (byte-level BPE only); "
                                 "use the model's Hugging Face folder instead")
    tokens: list[str] = list(md["tokenizer.ggml.tokens"])
    types: list[int] = list(md.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges") or []]
    pre = str(md.get("tokenizer.ggml.pre") or "default")
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False,
                     ignore_merges=pre in _LLAMA3_LIKE)
    backend = HFTokenizer(bpe)
    backend.pre_tokenizer = _pre_tokenizer(pre)
    backend.decoder = decoders.ByteLevel()
    control = [i for i, t in enumerate(types) if t == TOKEN_TYPE_CONTROL]
    user = [i for i, t in enumerate(types) if t == TOKEN_TYPE_USER_DEFINED]
    backend.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in control])
    backend.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in user])
    eos = {int(md[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                "tokenizer.ggml.eom_token_id") if md.get(k) is not None}
    eos |= {i for i in control if tokens[i] in STOP_TOKEN_TEXTS}
    bos = md.get("tokenizer.ggml.bos_token_id")
    return GGUFTokenizerParts(
        backend=backend,
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=frozenset(eos),
        add_bos_token=bool(md.get("tokenizer.ggml.add_bos_token", False)),
        chat_template=md.get("tokenizer.chat_template"),
        special_ids=frozenset(control),
    )
