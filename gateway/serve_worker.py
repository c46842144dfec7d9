"""One worker of `hybridgw serve --workers N` (`python -m gateway.serve_worker INDEX PLAN_JSON`, started
by gateway/worker_pool.py): the full request path on the port the supervisor claimed, the engines
the supervisor runs, limits counted by the supervisor (or Redis), its own ledger writer into the
shared store (SQLite in WAL mode, or Redis), /metrics of all workers (worker_metrics.py), and
/readyz telling how many workers there are."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.assembly import build_observability, open_key_store
from gateway.listen_sockets import worker_socket
from gateway.serve_cli import exit_cleanly_on_sigterm, ignore_sighup_without_file, serve_app, start_logging
from gateway.settings import Settings
from gateway.worker_metrics import WorkerMetrics
from gateway.worker_pool import WorkerPlan
from observability.limits_protocol import Limiter
from observability.limits_shared import CountsClient, CountsUnavailable, SharedLimiter
from policies.errors import PolicyError
from policies.limits import limits_from_policy
from policies.loader import load_default_policy, load_policy_file
from policies.offline import configure_offline_env


class WorkerHeader:
    """Names the worker that answered in every response (`x-hybridgw-worker: INDEX`): which process
    served a request is what one asks first when only some requests misbehave."""

    def __init__(self, app: Any, index: int) -> None:
        self.app = app
        self.header = (b"x-hybridgw-worker", str(index).encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        return await self.app(scope, receive, tagged)


def workers_view(client: CountsClient, plan: WorkerPlan, index: int) -> Any:
    """/readyz's `workers`: how many, how many alive, restarts and which one answered; process ids
    only for the admin key (as the other internals there)."""
    async def view(admin: bool) -> dict[str, Any]:
        mine: dict[str, Any] = {"count": plan.count, "index": index}
        try:
            status = await client.call(["s"])
        except CountsUnavailable:
            status = {"supervisor": "unreachable"}
        if admin:
            mine["pid"] = os.getpid()
        else:
            status = {k: v for k, v in status.items() if not k.endswith(("pid", "pids"))}
        return {**status, **mine}

    return view


def run(index: int, plan: WorkerPlan) -> int:
    configure_offline_env()
    exit_cleanly_on_sigterm()
    listener = start_logging(plan.log_level)
    settings = Settings.from_env(host=plan.host, port=plan.port, data_dir=Path(plan.data_dir),
                                 policy_file=None if plan.policy_file is None else Path(plan.policy_file))
    loaded = load_default_policy() if settings.policy_file is None else load_policy_file(settings.policy_file)
    client = CountsClient(Path(plan.control_socket))
    limiter: Limiter | None = None if settings.redis_url else SharedLimiter(client, limits_from_policy(loaded.policy))
    store = open_key_store(settings)
    obs = build_observability(settings, loaded.policy, os.environ, key_store=store, limiter=limiter)
    sock = worker_socket(plan.host, plan.port, plan.fd)
    metrics = WorkerMetrics(obs.metrics.provider, obs.metrics.registry, Path(plan.control_socket).parent, index)
    stop_publishing = threading.Event()
    metrics.start_publishing(stop_publishing)
    try:
        app = create_app(settings, policy=loaded, key_store=store, usage_sink=obs.ledger, limiter=obs.limiter,
                         tracer_provider=obs.tracing.provider, metrics=metrics,
                         request_metrics=obs.request_metrics, usage_store=obs.ledger.store,
                         engine_urls=plan.engine_urls)
        app.state.readiness.workers = workers_view(client, plan, index)
        ignore_sighup_without_file(settings)
        serve_app(WorkerHeader(app, index), settings, sock)
    finally:
        stop_publishing.set()
        obs.close()
        store.close()
        listener.stop()
    return 0


def main(argv: list[str]) -> int:
    index, plan = int(argv[0]), WorkerPlan(**json.loads(argv[1]))
    try:
        return run(index, plan)
    except PolicyError as exc:  # the file changed into one that does not load since the supervisor read it
        print(f"hybridgw worker {index}: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
