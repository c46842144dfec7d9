"""The model's own tokenizer (``tokenizers`` backend) and chat template, plus streaming detokenization.

Built from a GGUF's tokenizer.ggml.* metadata or a Hugging Face folder's tokenizer files.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from local_engine.chat_template import ChatTemplateError, render_chat
from local_engine.loaders.gguf_tokenizer import STOP_TOKEN_TEXTS, build_gguf_tokenizer
from local_engine.token_bytes import TokenBytes

_REPLACEMENT = "\ufffd"


class Tokenizer:
    """Text <-> ids for one model, its special ids and its chat template."""

    def __init__(self, backend: HFTokenizer, *, bos_token_id: int | None, eos_token_ids: Iterable[int],
                 add_bos_token: bool = False, chat_template: str | None = None,
                 bos_by_backend: bool = False) -> None:
        self.backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_ids: frozenset[int] = frozenset(eos_token_ids)
        self.add_bos_token = add_bos_token
        self.chat_template = chat_template
        self._bos_by_backend = bos_by_backend  # HF post-processor already inserts BOS
        self._raw_bytes: TokenBytes | None = None  # built on first use (reads the whole vocabulary spec)

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any]) -> Tokenizer:
        parts = build_gguf_tokenizer(metadata)
        return cls(parts.backend, bos_token_id=parts.bos_token_id, eos_token_ids=parts.eos_token_ids,
                   add_bos_token=parts.add_bos_token, chat_template=parts.chat_template)

    @classmethod
    def from_hf_folder(cls, folder: str | Path) -> Tokenizer:
        folder = Path(folder)
        backend = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        cfg = _read_json(folder / "tokenizer_config.json")
        bos_text, eos_text = _token_text(cfg.get("bos_token")), _token_text(cfg.get("eos_token"))
        bos = backend.token_to_id(bos_text) if bos_text else None
        eos = {i for i in (backend.token_to_id(eos_text) if eos_text else None,) if i is not None}
        for path in (folder / "generation_config.json", folder / "config.json"):
            eos |= set(_as_id_list(_read_json(path).get("eos_token_id")))
        eos |= {i for text, i in backend.get_vocab(with_added_tokens=True).items()
                if text in STOP_TOKEN_TEXTS and _is_special(backend, i)}
        return cls(backend, bos_token_id=bos, eos_token_ids=eos, add_bos_token=bool(cfg.get("add_bos_token")),
                   chat_template=_hf_chat_template(folder, cfg), bos_by_backend=True)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        special = add_special_tokens and self._bos_by_backend
        try:
            ids: list[int] = self.backend.encode(text, add_special_tokens=special).ids
        except TypeError:  # a lone surrogate ("\ud800" is valid JSON): U+FFFD in its place, as tiktoken does
            ids = self.backend.encode(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), add_special_tokens=special).ids
        if (add_special_tokens and not self._bos_by_backend and self.add_bos_token
                and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]):
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        """The one token's text (for logprobs); raw bytes that are not valid UTF-8 come out as U+FFFD."""
        return self.backend.decode([token_id], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The one token's raw bytes (logprobs' ``bytes``): part of a UTF-8 character stays that part."""
        if self._raw_bytes is None:
            self._raw_bytes = TokenBytes(self.backend)
        return self._raw_bytes.of(token_id, self.token_text)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None, **extra: Any) -> str:
        if not self.chat_template:
            raise ChatTemplateError("this model has no chat template; use /v1/completions")
        specials = {"bos_token": self._id_text(self.bos_token_id),
                    "eos_token": self._id_text(min(self.eos_token_ids, default=None))}
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           tools=tools, **{**specials, **extra})

    def _id_text(self, token_id: int | None) -> str:
        return "" if token_id is None else (self.backend.id_to_token(token_id) or "")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _as_id_list(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value] if isinstance(value, list) else []


def _is_special(backend: HFTokenizer, token_id: int) -> bool:
    added = backend.get_added_tokens_decoder()
    return token_id in added and bool(added[token_id].special)


def _hf_chat_template(folder: Path, cfg: dict[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


class IncrementalDetokenizer:
    """Turns a stream of token ids into text pieces without ever splitting a UTF-8 character.

    Decodes a short window (prefix .. end) and emits only what lies past the previous end,
    holding back while the window's text ends in U+FFFD (an incomplete multi-byte character).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here gives stable leading text
        self._read = 0  # ids up to here have been emitted

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character comes out as U+FFFD)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self._read >= len(self._ids):
            return ""
        decode = self._tokenizer.decode
        prefix_text = decode(self._ids[self._prefix:self._read], skip_special_tokens=self._skip)
        full_text = decode(self._ids[self._prefix:], skip_special_tokens=self._skip)
        if not final and (len(full_text) <= len(prefix_text) or full_text.endswith(_REPLACEMENT)):
            return ""
        new = full_text[len(prefix_text):]
        self._prefix, self._read = self._read, len(self._ids)
        return new
