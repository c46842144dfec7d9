"""The CSV `hybridgw shadow export` writes is RouteLLM's format: once its two label columns are filled,
the project's own reader (`router eval`, `train --labels`) takes it as it is."""
from __future__ import annotations

import csv
from pathlib import Path

from gateway.shadow_cli import csv_rows
from observability.shadow_pairs import Answer, ShadowPair
from policies.quality.dataset import read_csv


def pair(i: int, served: str) -> ShadowPair:
    other = "strong" if served == "weak" else "weak"
    return ShadowPair(f"req_{i}", "red", 1.0, "m",
                      [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"question {i}"}],
                      Answer(served, "m", f"{served} says {i}", "ok", 0.1), Answer(other, "m", f"{other} says {i}", "ok", 0.2),
                      ("weak", "strong"), difficulty=0.5 if i else None)


def test_export_columns_follow_the_policy_order_whoever_served(tmp_path: Path) -> None:
    rows = csv_rows([pair(0, "weak"), pair(1, "strong")])
    assert rows[0] == ["prompt", "weak", "strong", "weak_answer", "strong_answer", "request_id", "difficulty"]
    assert rows[1] == ["question 0", "", "", "weak says 0", "strong says 0", "req_0", ""]
    assert rows[2] == ["question 1", "", "", "weak says 1", "strong says 1", "req_1", "0.5000"]
    for row, labels in zip(rows[1:], (("True", "True"), ("False", "True")), strict=True):
        row[1:3] = labels  # what the team (or a judge) fills in
    path = tmp_path / "labelled.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    data = read_csv(path)
    assert data.prompts == ("question 0", "question 1") and (data.weak_name, data.strong_name) == ("weak", "strong")
    assert data.weak.tolist() == [True, False] and data.strong.tolist() == [True, True]
    assert csv_rows([]) == [["prompt", "weak", "strong"]]
