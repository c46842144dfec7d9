"""Finished spans straight to OTLP protobuf bytes (an ExportTraceServiceRequest), without building the
generated message objects the SDK's encoder builds and then serializes: the same message, ~5× less CPU
on the export thread. Pure: ReadableSpans in, bytes out."""
from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

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


def _flags(parent: SpanContext | None) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    return b"\x85\x01" + _pack_fixed32(flags)  # field 16, fixed32


def encode_span(span: ReadableSpan, attributes: Callable[[bytes, Mapping[str, Any] | None], bytes] = _attributes
                ) -> bytes:
    """One Span message (opentelemetry/proto/trace/v1/trace.proto)."""
    ctx = span.get_span_context()
    assert ctx is not None
    parts = [b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"), b"\x12\x08" + ctx.span_id.to_bytes(8, "big")]
    if ctx.trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()).encode()))
    if span.parent is not None:
        parts.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))
    parts += [_field(b"\x2a", span.name.encode()), _KIND[span.kind.value],
              b"\x39" + _pack_fixed64(span.start_time or 0), b"\x41" + _pack_fixed64(span.end_time or 0),
              attributes(b"\x4a", span.attributes), _uint_field(b"\x50", span.dropped_attributes)]
    for event in span.events:
        body = (b"\x09" + _pack_fixed64(event.timestamp) + _field(b"\x12", event.name.encode())
                + attributes(b"\x1a", event.attributes) + _uint_field(b"\x20", event.dropped_attributes))
        parts.append(_field(b"\x5a", body))
    parts.append(_uint_field(b"\x60", span.dropped_events))
    for link in span.links:
        body = (b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big") + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big") + attributes(b"\x22", link.attributes)
                + _uint_field(b"\x28", link.dropped_attributes) + b"\x35" + _pack_fixed32(
                    _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)))
        parts.append(_field(b"\x6a", body))
    parts.append(_uint_field(b"\x70", span.dropped_links))
    status = span.status
    status_body = (_field(b"\x12", status.description.encode()) if status.description else b"") + _uint_field(
        b"\x18", status.status_code.value)
    parts += [_field(b"\x7a", status_body), _flags(span.parent)]
    return b"".join(parts)


_SCALARS = frozenset((str, int, float, bool))
_KV_CACHE_MAX = 4096


class SpanEncoder:
    """Encodes batches (one encoder per exporter thread). Most attributes repeat from request to request
    (the keys always; team, model, backend, status, small counts often), so each encoded KeyValue is kept,
    as are the resource's and scope's encodings, which every batch repeats."""

    def __init__(self) -> None:
        self._kv: dict[tuple[str, type, Any], bytes] = {}  # the type in the key keeps True and 1 apart
        self._heads: dict[int, tuple[object, bytes]] = {}

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        out, cache = [], self._kv
        for key, value in attributes.items():
            if value.__class__ not in _SCALARS:
                out.append(_attribute(tag, key, value))
                continue
            kv = cache.get((key, value.__class__, value))
            if kv is None:
                try:
                    kv = _key_value(key, value)
                except ValueError as error:  # an int beyond int64
                    log.error("span attribute %r left out of the export: %s", key, error)
                    continue
                if len(cache) >= _KV_CACHE_MAX:
                    cache.clear()  # ids and timings never repeat: start over rather than grow
                cache[(key, value.__class__, value)] = kv
            out.append(_field(tag, kv))
        return b"".join(out)

    def _head(self, obj: object, build: Callable[[Any], bytes]) -> bytes:
        hit = self._heads.get(id(obj))
        if hit is None or hit[0] is not obj:  # the entry keeps the object alive, so its id stays its own
            hit = self._heads[id(obj)] = (obj, build(obj))
        return hit[1]

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The ExportTraceServiceRequest for `spans`, grouped by resource, then scope, as the SDK does
        (resources by identity: one provider's spans share its Resource, whose hash is a JSON dump)."""
        groups: dict[int, tuple[Any, dict[Any, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            scopes = groups.setdefault(id(resource), (resource, {}))[1]
            scopes.setdefault(scope, (scope, []))[1].append(_field(b"\x12", encode_span(span, self._attributes)))
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
