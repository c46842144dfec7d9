"""OpenAI request bodies at the engine server's edge (pydantic), turned into SamplingParams and messages.

Unknown fields are accepted and ignored, as OpenAI-compatible servers do; fields we cannot honour
(n > 1, best_of, echo with logprobs, structured output: response_format json_object/json_schema and
vLLM's guided_*, a tool call: tool_choice / function_call other than "none") are refused with a 400
naming the field.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from local_engine.sequence import SamplingParams

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20
# Refused, never ignored: a caller that asked for JSON must not get free text that looks like an answer.
# The gateway tries the route's next target on this code (a hosted model may constrain its output).
STRUCTURED_OUTPUT_UNSUPPORTED = "structured_output_unsupported"
_GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
# A tool call is output the engine cannot give: it has no tool-call parser (vLLM's --tool-call-parser) and
# cannot constrain its output to a call (how vLLM serves "required" and a named function). Refused as
# vLLM without --enable-auto-tool-choice refuses "auto", with the code on which the gateway tries the next target.
TOOL_CALLS_UNSUPPORTED = STRUCTURED_OUTPUT_UNSUPPORTED


class ProtocolError(ValueError):
    """A request field we refuse; ``param`` names it as OpenAI does."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Fields both endpoints share (plus vLLM's common extras: top_k, ignore_eos, stop_token_ids, priority)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    top_k: int | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    priority: int = 0
    response_format: Any = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        """Validate ranges (400 with the field named) and build the engine's SamplingParams."""
        self._refuse_structured_output()
        _check_range("n", self.n, 1, 1, "only n=1 is supported")
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("top_p", self.top_p, 1e-9, 1.0, "top_p must be in (0, 1]")
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _check_range("top_k", self.top_k, -1, None)  # -1 and 0 both mean off
        if self.stream_options is not None and not self.stream:
            raise ProtocolError("stream_options is only allowed when stream is true", "stream_options")
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ProtocolError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}", "stop")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0),
            seed=self.seed,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            stop=tuple(s for s in stops if s),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
        )


    def _refuse_structured_output(self) -> None:
        """This engine samples freely: it cannot constrain output to JSON or a grammar."""
        fmt = self.response_format
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        if fmt is not None and kind != "text":
            raise ProtocolError(f"response_format {kind!r} is not supported: this engine cannot constrain its "
                                "output to JSON (only {'type': 'text'})", "response_format",
                                STRUCTURED_OUTPUT_UNSUPPORTED)
        extras = self.model_extra or {}
        for name in _GUIDED_FIELDS:
            if extras.get(name) is not None:
                raise ProtocolError(f"{name} is not supported: this engine cannot constrain its output",
                                    name, STRUCTURED_OUTPUT_UNSUPPORTED)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def as_template_input(self) -> dict[str, Any]:
        """The message as chat templates expect it: text parts joined into one string."""
        data = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            texts = []
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ProtocolError("only text content parts are supported", "messages")
                texts.append(part["text"])
            data["content"] = "".join(texts)
        data.setdefault("content", "")
        return data


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None  # OpenAI's deprecated forms of tools and tool_choice
    function_call: str | dict[str, Any] | None = None

    def refuse_tool_calls(self) -> None:
        """Only what asks for a text answer passes: no tools, or tool_choice "none" (the tools still go into
        the chat template, as vLLM puts them: the model knows of them and answers in words). "auto" (also
        what tools without a tool_choice mean), "required" and a named function are a 400 naming the field.
        parallel_tool_calls is left alone: with no call possible it changes nothing."""
        _refuse_calls("tool_choice", self.tool_choice, "tools", bool(self.tools))
        _refuse_calls("function_call", self.function_call, "functions", bool(self.functions))

    def requested_max_tokens(self) -> int | None:
        value = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        param = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        _check_range(param, value, 1, None)
        return value

    def requested_logprobs(self) -> int | None:
        if not self.logprobs:
            if self.top_logprobs:
                raise ProtocolError("top_logprobs needs logprobs to be true", "top_logprobs")
            return None
        _check_range("top_logprobs", self.top_logprobs, 0, MAX_LOGPROBS)
        return self.top_logprobs or 0

    def template_messages(self) -> list[dict[str, Any]]:
        return [m.as_template_input() for m in self.messages]


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = False
    best_of: int | None = None
    suffix: str | None = None

    def requested_max_tokens(self) -> int:
        value = 16 if self.max_tokens is None else self.max_tokens  # OpenAI's default for completions
        _check_range("max_tokens", value, 1, None)
        return value

    def requested_logprobs(self) -> int | None:
        _check_range("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        return self.logprobs

    def single_prompt(self) -> str | list[int]:
        """The one prompt (text or token ids); a batch of several prompts is refused."""
        _check_range("best_of", self.best_of, 1, 1, "best_of is not supported")
        if self.suffix:
            raise ProtocolError("suffix is not supported", "suffix")
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise ProtocolError("only one prompt per request is supported", "prompt")
            prompt = prompt[0]  # type: ignore[assignment]
        if not prompt:
            raise ProtocolError("prompt must not be empty", "prompt")
        return prompt  # type: ignore[return-value]


def _check_range(param: str, value: float | None, low: float, high: float | None, message: str = "") -> None:
    if value is None:
        return
    if not low <= value or (high is not None and not value <= high):  # NaN compares false: refused too
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ProtocolError(message or f"{param} must be {bounds}, got {value}", param)


def _refuse_calls(param: str, choice: str | dict[str, Any] | None, offered_param: str, offered: bool) -> None:
    """Refuse `choice` (of tool_choice / function_call) unless it asks for no call."""
    if choice == "none" or (choice is None and not offered):
        return
    if choice is None:  # OpenAI's default when tools are offered: "auto"
        raise ProtocolError(f"{offered_param} without {param} means {param} 'auto', which this engine cannot "
                            f"serve: it cannot answer with a tool call (send {param} 'none' for a text answer)",
                            param, TOOL_CALLS_UNSUPPORTED)
    if isinstance(choice, str) and choice not in ("auto", "required"):
        raise ProtocolError(f"{param} must be 'none', 'auto', 'required' or a named function, got {choice!r}",
                            param)
    what = repr(choice) if isinstance(choice, str) else "a named function"
    raise ProtocolError(f"{param} {what} is not supported: this engine cannot answer with a tool call "
                        f"(only {param} 'none')", param, TOOL_CALLS_UNSUPPORTED)
