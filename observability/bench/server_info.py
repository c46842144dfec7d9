"""What the bench asks the server before a run: the model it serves (GET /v1/models), when the
user named none."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from observability.bench.client import Target


class ServerInfoError(Exception):
    """The server could not tell us; the message says what to do instead."""


def first_model(target: Target, headers: dict[str, str], api_key: str | None, timeout_s: float = 10.0) -> str:
    base = target.path.rsplit("/v1/", 1)[0] + "/v1/models"
    url = f"{target.scheme}://{target.host}:{target.port}{base}"
    request = urllib.request.Request(
        url, headers={**headers, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    )
    context = ssl.create_default_context() if target.scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            data = json.loads(response.read())
        return str(data["data"][0]["id"])
    except urllib.error.HTTPError as exc:
        raise ServerInfoError(
            f"GET {url} answered {exc.code}; pass --model (and --api-key if it needs one)"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerInfoError(f"cannot reach {url}: {reason}") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise ServerInfoError(f"GET {url} did not list a model; pass --model") from None
