"""A cheaper span for the event loop: the SDK's TracerProvider, sampler, id generator, limits and span
processors, but a span that records into a plain dict (one type check for the str/int/float/bool values
the gateway sets, the SDK's cleaning for anything else) and hands itself to the processors when it
ends. It is an OTel ReadableSpan, so exporters, processors and tests read it as they read the SDK's."""
from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, Tracer, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_PLAIN = frozenset((str, int, float, bool, type(None)))  # kept as they are, as the SDK keeps them
_SEQUENCES = frozenset((list, tuple))
_UNSET = Status(StatusCode.UNSET)


def _frozen(attributes: Mapping[str, Any] | None, limits: SpanLimits, cap: int | None) -> Mapping[str, Any]:
    """An event's or link's attributes: as given when they are plain and few (the gateway's one event),
    else through the SDK's BoundedAttributes (cleaning, limits, dropped count)."""
    if not attributes:
        return {}
    if (limits.max_attribute_length is None and (cap is None or len(attributes) <= cap)
            and all(v.__class__ in _PLAIN and k.__class__ is str and k for k, v in attributes.items())):
        return dict(attributes)
    return BoundedAttributes(cap, attributes, max_value_len=limits.max_attribute_length)


class RecordingSpan(trace_api.Span, ReadableSpan):
    """A live span that is its own ReadableSpan. Like every span of the gateway it is used from one
    thread (the SDK's locks are for spans shared between threads)."""

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None, tracer: Tracer,
                 kind: SpanKind, links: Sequence[Link]) -> None:
        self._name, self._context, self._parent, self._kind = name, context, parent, kind
        self._resource, self._instrumentation_scope = tracer.resource, tracer._instrumentation_scope
        self._instrumentation_info = tracer.instrumentation_info
        self._limits: SpanLimits = tracer._span_limits
        self._processor = tracer.span_processor
        self._attributes: dict[str, Any] = {}
        self._events: list[Event] = []
        self._links: list[Link] = []
        self._dropped = [0, 0, 0]  # attributes, events, links
        self._status, self._start_time, self._end_time = _UNSET, 0, None
        for link in links:
            self.add_link(link.context, link.attributes)

    # --- recording (no-ops once ended, as in the SDK) ---
    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is not None:
            return
        own, cap, strings_capped = self._attributes, self._limits.max_span_attributes, self._limits.max_attribute_length
        if not own and strings_capped is None and (cap is None or len(attributes) <= cap):
            # A span's first attributes (the gateway's every set): no key to move, no cap to meet, so a
            # plain one is stored as is and only the others take the walk below (~1/3 fewer instructions).
            for key, value in attributes.items():
                if value.__class__ in _PLAIN and key.__class__ is str and key:
                    own[key] = value
                else:
                    self._set_one(key, value, own, cap, strings_capped)
            return
        for key, value in attributes.items():
            self._set_one(key, value, own, cap, strings_capped)

    def _set_one(self, key: Any, value: Any, own: dict[str, Any], cap: int | None, strings_capped: int | None) -> None:
        """One attribute as the SDK sets it: cleaned, capped, a key set again moved to the end."""
        if value.__class__ in _SEQUENCES and strings_capped is None and all(v.__class__ in _PLAIN for v in value):
            value = tuple(value)  # what the SDK's cleaning makes of it, without the walk
        elif value.__class__ not in _PLAIN or key.__class__ is not str or not key or strings_capped is not None:
            cleaned = BoundedAttributes(None, {key: value}, max_value_len=strings_capped)
            if not cleaned:
                self._dropped[0] += 1
                return
            key, value = next(iter(cleaned.items()))
        if key in own:
            del own[key]  # a key set again moves to the end, as in the SDK
        elif cap is not None and len(own) >= cap:
            del own[next(iter(own))]
            self._dropped[0] += 1
        own[key] = value

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        limits = self._limits
        if limits.max_events is not None and len(self._events) >= limits.max_events:
            del self._events[0]
            self._dropped[1] += 1
        self._events.append(Event(name, _frozen(attributes, limits, limits.max_event_attributes), timestamp))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self._end_time is not None or not (context and (context.is_valid or attributes or context.trace_state)):
            return
        limits = self._limits
        if limits.max_links is not None and len(self._links) >= limits.max_links:
            del self._links[0]
            self._dropped[2] += 1
        self._links.append(Link(context, _frozen(attributes, limits, limits.max_link_attributes)))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: OK is final, UNSET is ignored."""
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        new = status if isinstance(status, Status) else Status(status, description)
        if new.status_code is not StatusCode.UNSET:
            self._status = new

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        kind = type(exception)
        name = kind.__qualname__ if kind.__module__ in ("builtins", "") else f"{kind.__module__}.{kind.__qualname__}"
        attrs = {"exception.type": name, "exception.message": str(exception),
                 "exception.stacktrace": "".join(traceback.format_exception(exception)),
                 "exception.escaped": str(escaped), **(attributes or {})}
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._processor._on_ending(self)
        self._processor.on_end(self)  # itself: nothing changes a span once it has ended

    def get_span_context(self) -> SpanContext:
        return self._context

    # --- ReadableSpan's counts of what the limits dropped ---
    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def _local_parent_decision(sampler: Sampler, parent_sampled: bool) -> bool | None:
    """What `sampler` decides for a span under a local parent when that is the parent's own decision
    (ALWAYS_ON / ALWAYS_OFF, or ParentBased with its defaults for a local parent: the samplers
    OTEL_TRACES_SAMPLER names); None: the sampler must be asked."""
    if parent_sampled:
        follows = sampler is ALWAYS_ON or getattr(sampler, "_local_parent_sampled", None) is ALWAYS_ON
        return True if follows else None
    follows = sampler is ALWAYS_OFF or getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
    return False if follows else None


class RecordingTracer(Tracer):
    """The SDK's Tracer, starting RecordingSpans: the same sampling, ids and trace flags."""

    def start_span(self, name: str, context: context_api.Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Mapping[str, Any] | None = None, links: Sequence[Link] | None = (),
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace_api.Span:
        links = links or ()
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if not self._is_enabled():
            return trace_api.NonRecordingSpan(parent)
        decided = None
        if parent is None or not parent.is_valid:
            parent, trace_id, random_id = None, self.id_generator.generate_trace_id(), self.id_generator.is_trace_id_random()
        else:
            trace_id, random_id = parent.trace_id, parent.trace_flags.random_trace_id
            decided = None if parent.is_remote else _local_parent_decision(self.sampler, parent.trace_flags.sampled)
        if decided is None:
            sampling = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled, recording = sampling.decision.is_sampled(), sampling.decision.is_recording()
            trace_state, extra = sampling.trace_state, sampling.attributes
        else:  # what the sampler would answer, without asking it (ParentBased's defaults for a local parent)
            assert parent is not None
            sampled = recording = decided
            trace_state, extra = parent.trace_state, attributes  # as ALWAYS_ON's result carries them
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        span_context = SpanContext(trace_id, self.id_generator.generate_span_id(), is_remote=False,
                                   trace_flags=TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID if random_id else flags),
                                   trace_state=trace_state)
        if not recording:
            return trace_api.NonRecordingSpan(span_context)
        span = RecordingSpan(name, span_context, parent, self, kind, links)
        if extra:
            span.set_attributes(extra)
        span._start_time = start_time if start_time is not None else time_ns()
        self.span_processor.on_start(span, parent_context=context)
        return span


class RecordingTracerProvider(TracerProvider):
    """A TracerProvider whose tracers start RecordingSpans (everything else is the SDK's)."""

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Mapping[str, Any] | None = None) -> trace_api.Tracer:
        sdk = super().get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        if not isinstance(sdk, Tracer):  # disabled (OTEL_SDK_DISABLED): the SDK's no-op tracer
            return sdk
        scope: InstrumentationScope = sdk._instrumentation_scope
        return RecordingTracer(sdk.sampler, sdk.resource, sdk.span_processor, sdk.id_generator,
                               sdk.instrumentation_info, sdk._span_limits, scope, _tracer_config=sdk._tracer_config)
