"""A token's raw bytes, from its vocabulary piece: byte-level BPE (GPT-2 style) or SentencePiece pieces.

Decoding one token alone cannot give them: a piece holding part of a UTF-8 character decodes
to U+FFFD. The piece itself still holds the bytes, in the tokenizer's own spelling.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache

from tokenizers import Tokenizer as HFTokenizer

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback
_SPACE = "\u2581"  # SentencePiece's word marker


@cache
def byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable character table, inverted: the character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenBytes:
    """Raw bytes per token id for one tokenizer (cached; the vocabulary does not change)."""

    def __init__(self, backend: HFTokenizer) -> None:
        self.backend = backend
        spec = json.loads(backend.to_str())
        self.byte_level = "ByteLevel" in json.dumps(spec.get("decoder"))
        self.special = {t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
        self._cache: dict[int, bytes] = {}

    def of(self, token_id: int, token_text: Callable[[int], str]) -> bytes:
        found = self._cache.get(token_id)
        if found is None:
            found = self._cache[token_id] = self._compute(token_id, token_text)
        return found

    def _compute(self, token_id: int, token_text: Callable[[int], str]) -> bytes:
        piece = self.backend.id_to_token(token_id)
        if piece is None or token_id in self.special:
            return token_text(token_id).encode()
        if self.byte_level:
            table = byte_level_decoder()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
            return piece.encode()  # an added, non-special token is spelled as its text
        match = _BYTE_PIECE.fullmatch(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace(_SPACE, " ").encode()
