"""One name per concept across the packages: a class name is defined in one module only, so an import
never picks the wrong one of two (the gateway's polled EngineSnapshot vs the engine's own EngineStats,
the tiktoken TokenCounter vs the gateway's CompletionCounter, a least-squares LineFit vs kv_fit's EngineFit)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "policies", "observability", "local_engine")
# Request schemas of two different HTTP servers (the gateway's and the engine's), and bench-only types
# that mirror policy ones on purpose: left as they are.
KNOWN = {"ChatCompletionRequest", "ChatMessage", "CompletionRequest", "StreamOptions", "ModelNotFound", "Slo",
         "Summary", "Target", "Team", "_Strict"}


def _classes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef):
                    found[node.name].append(str(path.relative_to(ROOT)))
    return found


def test_no_class_name_is_defined_twice() -> None:
    twice = {name: where for name, where in _classes().items() if len(where) > 1 and name not in KNOWN}
    assert twice == {}


def test_the_renamed_concepts_each_live_in_one_place() -> None:
    found = _classes()
    assert found["TokenCounter"] == ["policies/tokens.py"]
    assert found["CompletionCounter"] == ["gateway/token_count.py"]
    assert found["EngineSnapshot"] == ["policies/live.py"]
    assert found["EngineStats"] == ["local_engine/engine.py"]
    assert found["LineFit"] == ["observability/report.py"]
    assert found["EngineFit"] == ["policies/strategies/kv_fit.py"]
