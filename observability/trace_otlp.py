"""Finished spans straight to OTLP protobuf bytes (an ExportTraceServiceRequest), without building the
generated message objects the SDK's encoder builds and then serializes: the same message, ~5× less CPU
on the export thread. Pure: ReadableSpans in, bytes out."""
from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode

log = logging.getLogger(__name__)
# OTLP's SpanKind starts at UNSPECIFIED = 0; the API's at INTERNAL = 0.
_KIND = {0: b"\x30\x01", 1: b"\x30\x02", 2: b"\x30\x03", 3: b"\x30\x04", 4: b"\x30\x05"}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags, as the SDK's encoder sets them
_pack_double, _pack_fixed64, _pack_fixed32 = struct.Struct("<d").pack, struct.Struct("<Q").pack, struct.Struct("<I").pack


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64: two's complement, ten bytes
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SHORT = [bytes((n,)) for n in range(0x80)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or message) whose tag byte(s) are given."""
    n = len(payload)
    return tag + (_SHORT[n] if n < 0x80 else _varint(n)) + payload


def _any_value(value: Any) -> bytes:
    """The AnyValue message (its oneof set even to a default, as the generated code does)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit int64")
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode a {type(value).__name__} attribute")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


def _attribute(tag: bytes, key: str, value: Any) -> bytes:
    """One KeyValue field; one that cannot be encoded is left out with a log line, as the SDK does."""
    try:
        return _field(tag, _key_value(key, value))
    except (TypeError, ValueError) as error:
        log.error("span attribute %r left out of the export: %s", key, error)
        return b""


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    return b"".join([_attribute(tag, k, v) for k, v in attributes.items()])


def _uint_field(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


def encode_span(span: ReadableSpan, attributes: Callable[[bytes, Mapping[str, Any] | None], bytes] = _attributes,
                name_kind: Callable[[ReadableSpan], bytes] | None = None) -> bytes:
    """One Span message (opentelemetry/proto/trace/v1/trace.proto). `name_kind`: its name and kind fields
    (an encoder's cache of them); None encodes them here."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    head = b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big") + b"\x12\x08" + ctx.span_id.to_bytes(8, "big")
    if ctx.trace_state:
        head += _field(b"\x1a", ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()).encode())
    if parent is not None:
        head += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
    parts = [head + (_name_kind(span) if name_kind is None else name_kind(span)),
             b"\x39" + _pack_fixed64(span.start_time or 0) + b"\x41" + _pack_fixed64(span.end_time or 0),
             attributes(b"\x4a", span.attributes)]
    if span.dropped_attributes:
        parts.append(_uint_field(b"\x50", span.dropped_attributes))
    for event in span.events:
        body = (b"\x09" + _pack_fixed64(event.timestamp) + _field(b"\x12", event.name.encode())
                + attributes(b"\x1a", event.attributes) + _uint_field(b"\x20", event.dropped_attributes))
        parts.append(_field(b"\x5a", body))
    if span.dropped_events:
        parts.append(_uint_field(b"\x60", span.dropped_events))
    for link in span.links:
        body = (b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big") + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big") + attributes(b"\x22", link.attributes)
                + _uint_field(b"\x28", link.dropped_attributes) + b"\x35" + _pack_fixed32(
                    _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)))
        parts.append(_field(b"\x6a", body))
    if span.dropped_links:
        parts.append(_uint_field(b"\x70", span.dropped_links))
    status = span.status
    parts.append(_UNSET_STATUS if status.status_code is StatusCode.UNSET and not status.description
                 else _status(status))
    parts.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
    return b"".join(parts)


def _name_kind(span: ReadableSpan) -> bytes:
    return _field(b"\x2a", span.name.encode()) + _KIND[span.kind.value]


def _status(status: Status) -> bytes:
    body = (_field(b"\x12", status.description.encode()) if status.description else b"") + _uint_field(
        b"\x18", status.status_code.value)
    return _field(b"\x7a", body)


_UNSET_STATUS = _field(b"\x7a", b"")
_LOCAL_FLAGS, _REMOTE_FLAGS = (b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE),
                               b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE))
# values kept encoded (and tuples of str); floats are timings and costs, seldom seen twice. A tuple of other
# values is not: (True,) == (1,), so the cache could not tell them apart.
_CACHED = frozenset((str, int, bool))
_KV_CACHE_MAX = 4096
_NOTHING = object()


class SpanEncoder:
    """Encodes batches (one encoder per exporter thread). Most attributes repeat from request to request
    (the keys always; team, model, backend, status, small counts often), so each encoded attribute field
    is kept whole (tag and length included), as are each key's encoding, each span name's fields (with its kind)
    and the resource's and scope's encodings, which every batch repeats."""

    def __init__(self) -> None:
        self._fields: dict[tuple[bytes, str, type, Any], bytes] = {}  # the type keeps True and 1 apart
        self._keys: dict[str, bytes] = {}  # key → its KeyValue key field
        self._heads: dict[int, tuple[object, bytes]] = {}
        self._names: dict[str, tuple[Any, bytes]] = {}  # name → (kind, the name's and kind's fields)

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        out, cache = [], self._fields
        for key, value in attributes.items():
            cls = value.__class__
            if cls is float:
                key_field = self._keys.get(key) or self._key_field(key)
                n = len(key_field) + 11
                if n < 0x80:
                    out.append(tag + _SHORT[n] + key_field + b"\x12\x09\x21" + _pack_double(value))
                    continue
            elif cls in _CACHED or (cls is tuple and all(v.__class__ is str for v in value)):
                field = cache.get((tag, key, cls, value))
                if field is None:
                    field = self._new_field(tag, key, value)
                out.append(field)
                continue
            out.append(_attribute(tag, key, value))
        return b"".join(out)

    def _key_field(self, key: str) -> bytes:
        if len(self._keys) >= _KV_CACHE_MAX:
            self._keys.clear()
        field = self._keys[key] = _field(b"\x0a", key.encode())
        return field

    def _new_field(self, tag: bytes, key: str, value: Any) -> bytes:
        """A str/int/bool attribute's field, kept for the next span; b"" (left out, logged) for an int
        beyond int64."""
        field = _attribute(tag, key, value)
        if field:
            if len(self._fields) >= _KV_CACHE_MAX:
                self._fields.clear()  # ids never repeat: start over rather than grow
            self._fields[(tag, key, value.__class__, value)] = field
        return field

    def _name_kind(self, span: ReadableSpan) -> bytes:
        name, kind = span.name, span.kind
        hit = self._names.get(name)
        if hit is None or hit[0] is not kind:
            if len(self._names) >= _KV_CACHE_MAX:
                self._names.clear()
            hit = self._names[name] = (kind, _name_kind(span))
        return hit[1]

    def _head(self, obj: object, build: Callable[[Any], bytes]) -> bytes:
        hit = self._heads.get(id(obj))
        if hit is None or hit[0] is not obj:  # the entry keeps the object alive, so its id stays its own
            hit = self._heads[id(obj)] = (obj, build(obj))
        return hit[1]

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The ExportTraceServiceRequest for `spans`, grouped by resource, then scope, as the SDK does
        (resources by identity: one provider's spans share its Resource, whose hash is a JSON dump)."""
        groups: dict[int, tuple[Any, dict[Any, tuple[Any, list[bytes]]]]] = {}
        attributes, name_kind = self._attributes, self._name_kind
        last: tuple[Any, Any, list[bytes]] = (_NOTHING, _NOTHING, [])
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            if resource is not last[0] or scope is not last[1]:  # spans in a row mostly share both
                scopes = groups.setdefault(id(resource), (resource, {}))[1]
                last = (resource, scope, scopes.setdefault(scope, (scope, []))[1])
            last[2].append(_field(b"\x12", encode_span(span, attributes, name_kind)))
        out = []
        for resource, scopes in groups.values():
            body = [self._head(resource, _resource)]
            for scope, encoded in scopes.values():
                tail = _field(b"\x1a", scope.schema_url.encode()) if getattr(scope, "schema_url", "") else b""
                body.append(_field(b"\x12", self._head(scope, _scope_head) + b"".join(encoded) + tail))
            if getattr(resource, "schema_url", ""):
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)


def _resource(resource: Any) -> bytes:
    return _field(b"\x0a", _attributes(b"\x0a", resource.attributes))


def _scope_head(scope: Any) -> bytes:
    """ScopeSpans' scope field (always present, as the SDK writes it), before its spans."""
    if scope is None:
        return _field(b"\x0a", b"")
    body = _field(b"\x0a", scope.name.encode()) if scope.name else b""
    body += _field(b"\x12", scope.version.encode()) if scope.version else b""
    return _field(b"\x0a", body + _attributes(b"\x1a", scope.attributes))
