"""`hybridgw policy explain` shows the difficulty score and the category: the facts a rule sees, or\nwhat they would be."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import policies
from policies.cli import main

EXAMPLES = Path(policies.__file__).parent / "examples"


def _explain(tmp_path: Path, policy: str, *extra: str) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"model": "chat", "messages": [
        {"role": "user", "content": "Prove that there are infinitely many primes."}]}), encoding="utf-8")
    assert main(["explain", str(EXAMPLES / policy), "--request", str(request),
                 "--env", "OPENAI_API_KEY=sk-test", *extra]) == 0


def test_explain_shows_the_score_and_the_quality_floor_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _explain(tmp_path, "quality_floor.yaml")
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("difficulty"))
    score = float(line.split()[1])
    assert 0.0 < score < 1.0 and "P(local model not good enough)" in line
    assert f"difficulty {score:.2f} " in out  # the decision's reason quotes the same score


def test_explain_shows_the_score_for_a_policy_that_does_not_use_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _explain(tmp_path, "spill_to_hosted.yaml", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["facts"]["difficulty"] is None and 0.0 < data["difficulty"] < 1.0


def test_explain_shows_the_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _explain(tmp_path, "semantic_routes.yaml")
    out = capsys.readouterr().out
    category = next(x for x in out.splitlines() if x.strip().startswith("category")).split()
    assert category[1] in ("code", "legal", "chitchat") and "would not compute" not in " ".join(category)
    assert "would not compute" in next(x for x in out.splitlines() if x.strip().startswith("difficulty"))
