"""YAML text → plain data plus the line of every key and item, so errors can say file:line.

Also expands `${VAR}` and `${VAR:-default}` in string values and refuses duplicate keys.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from policies.errors import PolicyError

Path_ = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """`${VAR}` → its value (empty when unset); `${VAR:-default}` → the default when unset or empty."""

    def repl(match: re.Match[str]) -> str:
        value = environ.get(match.group(1), "")
        return value if value or match.group(2) is None else match.group(2)

    return _ENV.sub(repl, text)


class _Reader:
    def __init__(self, loader: yaml.SafeLoader, filename: str, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.filename = filename
        self.environ = environ
        self.lines: dict[Path_, int] = {}

    def read(self, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node)
        if isinstance(value, str) and "${" in value:
            value = expand_env(value, self.environ)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int)):
                raise PolicyError(f"{self.filename}:{line}: a key must be a plain name, not {type(key).__name__}")
            if key in out:
                first = self.lines[(*path, key)]
                raise PolicyError(f"{self.filename}:{line}: duplicate key {key!r} (first at line {first})")
            self.lines[(*path, key)] = line
            out[key] = self.read(value_node, (*path, key))
        return out


def read_yaml(text: str, filename: str, environ: Mapping[str, str] | None = None) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document; returns its data and {path: line} for every mapping key and list item."""
    env = os.environ if environ is None else environ
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(f"{filename}:1: the file is empty; a policy needs at least backends and models")
        reader = _Reader(loader, filename, env)
        data = reader.read(node, ())
        return data, reader.lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PolicyError(f"{filename}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    finally:
        loader.dispose()
