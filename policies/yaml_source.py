"""YAML text → plain data plus the line of every key and item, so errors can say file:line.

Also expands `${VAR}` and `${VAR:-default}` in string values and refuses duplicate keys, and bounds
what a hostile file can cost: few aliases, no recursive anchor, a bounded number of expanded nodes.
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
MAX_ALIASES = 1024  # `*name` references in one file (shared limits per team, say); expansion is bounded below
MAX_DEPTH = 64  # nesting of mappings and lists (a policy nests about 6 deep)
_BRACKETS = re.compile(r"[\[\]{}]")
MAX_NODES = 100_000  # values after alias expansion ("billion laughs" expands 9 aliases to 10^9)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses more than MAX_ALIASES alias references or nesting beyond MAX_DEPTH."""

    def __init__(self, stream: str, filename: str) -> None:
        super().__init__(stream)
        self.filename = filename
        self.num_aliases = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(yaml.AliasEvent):
            self.num_aliases += 1
            if self.num_aliases > MAX_ALIASES:
                raise PolicyError(f"{self.filename}:{line}: more than {MAX_ALIASES} aliases (*name); refused")
        if self.depth >= MAX_DEPTH:
            raise PolicyError(f"{self.filename}:{line}: nested more than {MAX_DEPTH} levels deep; refused")
        self.depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


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
        self.num_nodes = 0
        self._open: set[int] = set()  # ids of the collections being read: an anchor inside itself

    def read(self, node: yaml.Node, path: Path_) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        self.num_nodes += 1
        if self.num_nodes > MAX_NODES:
            raise PolicyError(f"{self.filename}:{line}: more than {MAX_NODES} values once aliases are expanded; refused")
        if isinstance(node, yaml.CollectionNode):
            if id(node) in self._open:
                raise PolicyError(f"{self.filename}:{line}: an anchor refers to itself (recursive alias); refused")
            self._open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
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


def _flow_depth(text: str) -> int:
    """Deepest nesting of [ and { (quotes ignored: an upper bound). PyYAML's scanner is quadratic in it,
    so a file of a million '[' would hold the reload for hours before compose_node saw any depth."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def read_yaml(text: str, filename: str, environ: Mapping[str, str] | None = None) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document; returns its data and {path: line} for every mapping key and list item."""
    env = os.environ if environ is None else environ
    if _flow_depth(text) > MAX_DEPTH:
        raise PolicyError(f"{filename}: [ and {{ nested more than {MAX_DEPTH} levels deep; refused")
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, filename)  # checks every character: may raise ReaderError
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
    except yaml.reader.ReaderError as exc:  # a control character or invalid byte; not a MarkedYAMLError
        line = _line_at(text, exc.position)
        raise PolicyError(f"{filename}:{line}: not valid YAML: {exc.reason} (character #x{exc.character:04x})") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{filename}: not valid YAML: {exc}") from None
    except RecursionError:  # nesting deeper than Python's stack, or merge keys (<<) that merge themselves
        raise PolicyError(f"{filename}: nested too deeply, or a recursive anchor; refused") from None
    finally:
        if loader is not None:
            loader.dispose()
