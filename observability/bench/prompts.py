"""Prompt text of an exact token count: words that are one token each (with their leading space)
in the chosen tokenizer (a tiktoken encoding, or the server's own through its /tokenize), so N
words are N tokens and a tenant prefix plus a unique tail count exactly as the sum of their parts."""

from __future__ import annotations

import random
from collections.abc import Callable

import tiktoken

# Common English words; only those that are a single token (" word") in the encoding are used.
_CANDIDATES = """
the of and to in is was for on are with as be at by this had not but from or have an they which one you
were her all she there would their we him been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now such like
our over man me even most made after also did many before must through back years where much your way
well down should because each just those people how too little state good very make world still own see
men work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three states himself few house use during
without again place around however home small found thought went say part once general high upon school
every don does got united left number course war until always away something fact though water less
public put think almost hand enough far took head yet government system better set told nothing night
end why called didn eyes find going look asked later knew point next program city business give group
toward young days let room president side social given present several order national possible rather
second face per among form important often things looking early white case john become large big need
four within felt along children saw best church ever least power development light thing seemed family
interest want members mind country area others done turned although open
""".split()  # noqa: SIM905 (a word list reads better as prose)


Count = Callable[[str], int]
CHECK_WORDS = 400  # a sample text this long must count exactly: the tokenizer splits at spaces


class TokenizerMismatch(ValueError):
    """The tokenizer does not count our word texts additively; prompts could not hit their length."""


class PromptBuilder:
    """Builds texts of exactly `n` tokens (as `count` counts them) from a seeded word stream."""

    def __init__(self, name: str, count: Count) -> None:
        self.name, self.count = name, count
        self.words = [w for w in _CANDIDATES if count(" " + w) == 1]
        if len(self.words) < 50:  # would make prompts repetitive enough to hit prefix caches by chance
            raise TokenizerMismatch(f"tokenizer {name!r} has too few single-token words ({len(self.words)})")
        sample = self.text(CHECK_WORDS, random.Random(0))
        if count(sample) != CHECK_WORDS:
            raise TokenizerMismatch(
                f"tokenizer {name!r} counts {count(sample)} tokens in {CHECK_WORDS} "
                "single-token words: it merges across spaces"
            )

    @classmethod
    def tiktoken(cls, encoding: str) -> PromptBuilder:
        enc = tiktoken.get_encoding(encoding)
        return cls(encoding, lambda text: len(enc.encode_ordinary(text)))

    def text(self, num_tokens: int, rng: random.Random) -> str:
        """Exactly `num_tokens` tokens; each word carries its leading space, so texts concatenate
        without merging tokens across the seam."""
        return "".join(" " + rng.choice(self.words) for _ in range(num_tokens))
