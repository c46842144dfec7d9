"""What the bench asks the server before a run: the model it serves (GET /v1/models) when the user
named none, and token counts from its own tokenizer (POST /tokenize, as vLLM, SGLang and
`hybridgw engine` offer) for `--tokenizer server`."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from observability.bench.client import Target


class ServerInfoError(Exception):
    """The server could not tell us; the message says what to do instead."""


def _root(target: Target) -> str:
    """scheme://host:port plus any path before /v1 (a gateway mounted under a prefix)."""
    return f"{target.scheme}://{target.host}:{target.port}{target.path.rsplit('/v1/', 1)[0]}"


def _call(url: str, headers: dict[str, str], api_key: str | None, body: Any, timeout_s: float) -> Any:
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={**headers, **auth, "Content-Type": "application/json"}
    )
    context = ssl.create_default_context() if url.startswith("https") else None
    method = "GET" if body is None else "POST"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ServerInfoError(f"{method} {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerInfoError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise ServerInfoError(f"{method} {url} did not answer JSON") from None


def first_model(target: Target, headers: dict[str, str], api_key: str | None, timeout_s: float = 10.0) -> str:
    url = _root(target) + "/v1/models"
    try:
        return str(_call(url, headers, api_key, None, timeout_s)["data"][0]["id"])
    except ServerInfoError as exc:
        raise ServerInfoError(f"{exc}; pass --model (and --api-key if it needs one)") from None
    except (KeyError, IndexError, TypeError):
        raise ServerInfoError(f"GET {url} did not list a model; pass --model") from None


def server_counter(
    target: Target, headers: dict[str, str], api_key: str | None, model: str, timeout_s: float = 10.0
) -> Callable[[str], int]:
    """Counts text as the server's tokenizer does, special tokens (BOS) left out."""
    url = _root(target) + "/tokenize"

    def count(text: str) -> int:
        body = {"model": model, "prompt": text, "add_special_tokens": False}
        try:
            return int(_call(url, headers, api_key, body, timeout_s)["count"])
        except ServerInfoError as exc:
            raise ServerInfoError(
                f"{exc}; the server has no usable /tokenize: use --tokenizer o200k_base"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise ServerInfoError(
                f"POST {url} answered without a count; use --tokenizer o200k_base"
            ) from None

    return count


def engine_state(
    target: Target, headers: dict[str, str], api_key: str | None, timeout_s: float = 10.0
) -> dict[str, Any] | None:
    """GET /v1/engine/state (`hybridgw engine`: KV pool, limits); None where the server has none."""
    try:
        state = _call(_root(target) + "/v1/engine/state", headers, api_key, None, timeout_s)
    except ServerInfoError:
        return None
    return state if isinstance(state, dict) else None
