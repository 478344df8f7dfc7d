"""``tiqu status``: workers, GPUs, adapters, queue lengths and in-flight tasks.

Workers are asked with the ``tiqu_info`` broadcast (workers/control.py) and
Celery's ``inspect active``/``reserved``; queue lengths are LLEN on Redis. A
worker answers between batches only, so one in the middle of a batch longer
than ``--timeout-s`` is missing from the list until its batch ends.

Exit codes: plain ``status`` 0 when Redis answers; ``--check`` 0 when Redis
answers and at least one worker replies; ``--ready`` 0 only when the chosen
worker(s) reply and have the model loaded (a train-only worker needs no
model). Anything else exits 1 with the reason on stderr. ``--check`` and
``--ready`` are the health and readiness probes of the deploy files.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from core.names import EXTRACT_QUEUE, TRAIN_QUEUE
from core.redis import client_from_url, mask_url
from core.settings import Settings

INFO_COMMAND = "tiqu_info"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="workers, GPUs, adapters, queues, in-flight tasks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout-s", type=float, default=2.0,
                   help="seconds to wait for worker replies (default 2)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="health: exit 0 when Redis answers and a worker replies")
    mode.add_argument("--ready", action="store_true",
                      help="readiness: exit 0 when --worker (default: every worker "
                      "on this host) replies with its model loaded")
    p.add_argument("--worker", help="node name for --ready, e.g. gpu0@host")
    p.set_defaults(func=run)


def redis_state(settings: Settings) -> dict[str, Any]:
    """PING round trip and LLEN of every tiqu queue; never raises."""
    state: dict[str, Any] = {"url": mask_url(settings.redis_url), "ok": False,
                             "ping_ms": None, "error": None, "queues": {}}
    try:
        client = client_from_url(settings.redis_url, settings)
        start = time.perf_counter()
        client.ping()
        state["ping_ms"] = round((time.perf_counter() - start) * 1000, 2)
        state["queues"] = {q: int(client.llen(q)) for q in (EXTRACT_QUEUE, TRAIN_QUEUE)}
        state["ok"] = True
    except Exception as err:  # any connection/auth/TLS failure is a status, not a crash
        state["error"] = f"{type(err).__name__}: {err}"
    return state


def has_info(info: Any) -> bool:
    """Whether a worker's entry holds a tiqu_info answer."""
    return isinstance(info, dict) and "model_loaded" in info


def _merge(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for reply in replies or []:
        out.update(reply)
    return out


def ask_workers(app: Any, timeout_s: float, destination: list[str] | None = None,
                limit: int | None = None) -> dict[str, dict[str, Any]]:
    """``{node name: info}`` for the workers that answered in time.

    Every Celery worker answers ``active_queues``; those consuming the extract
    queue are then asked ``tiqu_info``. A worker of another app (the training
    worker) gets ``{"queues": [...]}`` only, and is never sent a command it
    does not know. Returns as soon as ``limit`` (default: one per destination)
    have replied.
    """
    limit = limit or (len(destination) if destination else None)
    replies = app.control.broadcast("active_queues", reply=True, timeout=timeout_s,
                                    destination=destination, limit=limit)
    workers: dict[str, dict[str, Any]] = {
        name: {"queues": sorted(q["name"] for q in queues or [])}
        for name, queues in _merge(replies).items()}
    extract = sorted(n for n, w in workers.items() if EXTRACT_QUEUE in w["queues"])
    if extract:
        replies = app.control.broadcast(INFO_COMMAND, reply=True, timeout=timeout_s,
                                        destination=extract, limit=len(extract))
        for name, info in _merge(replies).items():
            if isinstance(info, dict):
                workers[name].update(info)
    return workers


def in_flight_tasks(app: Any, names: list[str], timeout_s: float) -> dict[str, dict[str, int]]:
    """Per worker: counts from ``inspect active`` and ``inspect reserved``."""
    counts: dict[str, dict[str, int]] = {n: {"active": 0, "reserved": 0} for n in names}
    if not names:
        return counts
    for kind in ("active", "reserved"):
        replies = app.control.broadcast(kind, reply=True, timeout=timeout_s,
                                        destination=names, limit=len(names))
        for name, tasks in _merge(replies).items():
            counts.setdefault(name, {"active": 0, "reserved": 0})[kind] = len(tasks or [])
    return counts


def snapshot(settings: Settings, timeout_s: float, detail: bool = True,
             destination: list[str] | None = None, limit: int | None = None
             ) -> dict[str, Any]:
    """Everything ``tiqu status`` shows, as one JSON-ready dict."""
    from core.queue import make_celery

    state: dict[str, Any] = {"redis": redis_state(settings), "workers": {}}
    if not state["redis"]["ok"]:
        return state
    app = make_celery(settings)
    try:
        workers = ask_workers(app, timeout_s, destination, limit)
        if detail:
            tasks = in_flight_tasks(app, sorted(workers), timeout_s)
            for name, info in workers.items():
                if isinstance(info, dict):
                    info.update(tasks.get(name, {}))
        state["workers"] = workers
    finally:
        app.close()
    return state


def ready_problems(workers: dict[str, Any], wanted: str | None) -> list[str]:
    """Why the wanted worker(s) are not ready; empty when they are."""
    if wanted is not None:
        chosen = {wanted: workers[wanted]} if wanted in workers else {}
        if not chosen:
            return [f"worker {wanted} did not reply"]
    else:
        suffix = "@" + socket.gethostname()
        chosen = {n: i for n, i in workers.items() if n.endswith(suffix)}
        if not chosen:
            return [f"no worker named *{suffix} replied"]
    problems = []
    for name, info in sorted(chosen.items()):
        # Without a queue list (no reply to active_queues), assume the worst.
        serves_extract = EXTRACT_QUEUE in info.get("queues", [EXTRACT_QUEUE])
        if not has_info(info) and serves_extract:
            problems.append(f"worker {name} serves {EXTRACT_QUEUE} but did not answer "
                            f"{INFO_COMMAND} (busy in a batch, or not a tiqu worker)")
        elif has_info(info) and serves_extract and not info["model_loaded"]:
            problems.append(f"worker {name} has no model loaded")
    return problems


def render(state: dict[str, Any]) -> str:
    """The human-readable report."""
    r = state["redis"]
    lines = [f"redis    {r['url']}  " + (f"ok ({r['ping_ms']} ms)" if r["ok"]
                                         else f"DOWN: {r['error']}")]
    if r["ok"]:
        lines.append("queues   " + "  ".join(f"{q}={n}" for q, n in r["queues"].items()))
    workers = state["workers"]
    lines.append(f"workers  {len(workers)} replied")
    for name in sorted(workers):
        w = workers[name]
        if not has_info(w):
            lines.append(f"  {name}  queues={','.join(w.get('queues', []))}"
                         f"  (no {INFO_COMMAND}: the training worker, or busy)")
            continue
        loaded = "loaded" if w["model_loaded"] else "NOT LOADED"
        lines.append(
            f"  {name}  gpu={w['gpu']} device={w['device']} queues={','.join(w['queues'])}"
            f"  model={w['model']} ({loaded}) adapter={w['adapter_version']}"
            f"  batches={w['batches']} tokens={w['generated_tokens']}"
            f"  in_flight={w['in_flight']} active={w.get('active', 0)}"
            f" reserved={w.get('reserved', 0)}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.worker and not args.ready:
        print("tiqu status: --worker only applies to --ready", file=sys.stderr)
        return 2
    destination = [args.worker] if args.worker else None
    # A health check needs one reply, not all of them: return on the first.
    state = snapshot(settings, args.timeout_s, detail=not (args.check or args.ready),
                     destination=destination, limit=1 if args.check else None)
    if args.json:
        print(json.dumps(state, ensure_ascii=False, indent=2, sort_keys=True))
    elif not (args.check or args.ready):
        print(render(state))
    if not state["redis"]["ok"]:
        print(f"tiqu status: redis {state['redis']['url']} is down: {state['redis']['error']}",
              file=sys.stderr)
        return 1
    problems: list[str] = []
    if args.check and not state["workers"]:
        problems = [f"no worker replied within {args.timeout_s} s"]
    elif args.ready:
        problems = ready_problems(state["workers"], args.worker)
    for problem in problems:
        print(f"tiqu status: {problem}", file=sys.stderr)
    return 1 if problems else 0
