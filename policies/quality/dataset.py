"""Read labelled routing data in RouteLLM's response format: a CSV with `prompt`, then the weak and
the strong model's correctness as True/False columns; and its list of contaminated prompts."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TRUE, _FALSE = frozenset({"true", "1", "1.0"}), frozenset({"false", "0", "0.0"})


@dataclass(frozen=True)
class Labelled:
    prompts: tuple[str, ...]
    weak: np.ndarray  # (n,) bool: the weak model answered right
    strong: np.ndarray  # (n,) bool
    weak_name: str
    strong_name: str
    groups: tuple[str, ...] = ()  # e.g. the MMLU subject of each row (the file it came from)


def _flag(value: str, where: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{where}: {value!r} is not True/False")


def read_csv(path: Path, weak: str | None = None, strong: str | None = None) -> Labelled:
    """`weak`/`strong` name the columns; by default the first and second column after `prompt`."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in reader.fieldnames or () if c != "prompt"]
            if "prompt" not in (reader.fieldnames or ()) or len(columns) < 2:
                raise ValueError(f"{path}: needs a 'prompt' column and two True/False columns (weak, strong)")
            weak, strong = weak or columns[0], strong or columns[1]
            for name in (weak, strong):
                if name not in columns:
                    raise ValueError(f"{path}: no column {name!r}; columns: {', '.join(columns)}")
            rows = [(r["prompt"], _flag(r[weak], f"{path}:{i + 2}"), _flag(r[strong], f"{path}:{i + 2}"))
                    for i, r in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return Labelled(tuple(r[0] for r in rows), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                    weak, strong, (path.stem,) * len(rows))


def concat(parts: list[Labelled]) -> Labelled:
    return Labelled(tuple(p for part in parts for p in part.prompts), np.concatenate([p.weak for p in parts]),
                    np.concatenate([p.strong for p in parts]), parts[0].weak_name, parts[0].strong_name,
                    tuple(g for part in parts for g in part.groups))


def read_contaminated(path: Path) -> frozenset[str]:
    """RouteLLM's jsonl (`eval_prompt` per line) or a plain text file, one prompt per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    out = set()
    for line in filter(str.strip, lines):
        try:
            item = json.loads(line)
        except ValueError:
            item = line
        out.add((item.get("eval_prompt", "") if isinstance(item, dict) else str(item)).strip())
    return frozenset(out - {""})


def drop(data: Labelled, prompts: frozenset[str]) -> tuple[Labelled, int]:
    """Without the rows whose prompt is listed; and how many were dropped."""
    keep = np.array([p.strip() not in prompts for p in data.prompts], dtype=bool)
    if keep.all():
        return data, 0
    idx = np.nonzero(keep)[0]
    return Labelled(tuple(data.prompts[i] for i in idx), data.weak[idx], data.strong[idx], data.weak_name,
                    data.strong_name, tuple(data.groups[i] for i in idx) if data.groups else ()), int((~keep).sum())
