"""``tiqu adapters list|show|publish|promote|rollback|history|workers``.

``publish DIR`` stores ``DIR/adapter/`` and ``DIR/manifest.json`` (as the
trainer writes them), signed when ``TIQU_ADAPTER_SIGNING_KEY`` is set, and
prints the new version on stdout. ``promote`` and
``rollback`` change the one active-version key, then broadcast ``tiqu_swap`` so
idle workers swap at once, and print each worker's reply. Busy workers swap
before their next batch anyway. Exit status 1 when a worker refuses the
new active version (the promotion itself stays recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.adapters import BASE, Promotion, Registry
from core.settings import Settings

SWAP_COMMAND = "tiqu_swap"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("adapters", help="list, publish, promote and roll back adapters")
    acts = p.add_subparsers(dest="action", required=True)
    acts.add_parser("list", help="published versions; * marks the active one")
    show = acts.add_parser("show", help="one version's record and manifest (JSON)")
    show.add_argument("version")
    pub = acts.add_parser("publish", help="store DIR/adapter + DIR/manifest.json; print version")
    pub.add_argument("dir", type=Path)
    pub.add_argument("--version", help="publish under this version (default: the manifest's)")
    for name, text in (("promote", "make VERSION (or 'none': the base model) active"),
                       ("rollback", "return to the version active before the last promotion")):
        cmd = acts.add_parser(name, help=text)
        if name == "promote":
            cmd.add_argument("version")
            cmd.add_argument("--if-better", action="store_true",
                             help="only if its scores are no worse than the active adapter's")
            cmd.add_argument("--margin", type=float,
                             help="largest accepted drop per score (default: settings)")
        cmd.add_argument("--reason", default="", help="recorded in the promotion history")
        cmd.add_argument("--timeout-s", type=float, default=5.0,
                         help="how long to wait for worker replies")
        cmd.add_argument("--no-broadcast", action="store_true",
                         help="don't wake workers; they swap before their next batch")
    hist = acts.add_parser("history", help="promotions: when, from, to, why")
    hist.add_argument("-n", type=int, default=20, help="show the last N (0: all)")
    acts.add_parser("workers", help="what each worker reported serving, and its last error")
    pack = acts.add_parser("pack", help="copy a finished run with its weights in bfloat16 "
                                        "(half the size), ready to ship or publish")
    pack.add_argument("dir", type=Path, help="the run folder (adapter/ + manifest.json)")
    pack.add_argument("out", type=Path, help="the packed copy (absent or empty)")
    pack.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    action = args.action
    if action == "pack":
        from tiqu.pack import pack

        packed = pack(args.dir, args.out, args.dtype)
        info = packed.packed  # type: ignore[attr-defined]  # an extra manifest field
        print(f"packed {packed.version} to {args.out}: {info['bytes_before']} -> "
              f"{info['bytes_after']} bytes ({info['dtype']})")
        return 0
    registry = Registry.from_settings(settings)
    if action == "list":
        return _list(registry)
    if action == "show":
        record = registry.get(args.version)
        print(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    if action == "publish":
        record = registry.publish(args.dir, version=args.version)
        signed = ", signed" if record.signature else ""
        print(f"published {record.version}: {record.size_bytes} bytes in the {record.store} "
              f"store{signed}", file=sys.stderr)
        print(record.version)
        return 0
    if action == "history":
        for entry in registry.history(args.n or None):
            print(_history_line(entry))
        return 0
    if action == "workers":
        for state in registry.worker_states():
            print(_state_line(state))
        return 0
    return _switch(registry, settings, args)


def _list(registry: Registry) -> int:
    active = registry.active()
    marker = "*" if active in ("", BASE) else " "
    print(f"{marker} {BASE:<24} (base model)")
    for r in registry.versions():
        marker = "*" if r.version == active else " "
        scores = " ".join(f"{k}={v:.3g}" for k, v in r.manifest.metrics.items()
                          if isinstance(v, int | float) and not isinstance(v, bool))
        print(f"{marker} {r.version:<24} {r.published_at}  {r.store:<6} "
              f"{r.size_bytes:>10} B  {scores}")
    if active is None:
        print("(no active version set: workers serve what they started with)")
    return 0


def _switch(registry: Registry, settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "rollback":
        entry: Promotion | None = registry.rollback(args.reason)
    elif args.if_better:
        decision, entry = registry.promote_if_better(args.version, args.margin,
                                                     reason=args.reason)
        print(("promoting: " if entry else "not promoted: ") + decision.reason, file=sys.stderr)
    else:
        entry = registry.promote(args.version, args.reason)
    if entry is None:
        return 1
    print(_history_line(entry))
    if args.no_broadcast:
        return 0
    replies = broadcast_swap(settings, args.timeout_s, registry)
    for state in replies:
        print(_state_line(state))
    if not replies:
        print(f"no worker replied within {args.timeout_s:g} s; workers swap before their "
              "next batch", file=sys.stderr)
    return 1 if any(s.get("refused") for s in replies) else 0


def broadcast_swap(settings: Settings, timeout_s: float,
                   registry: Registry | None = None) -> list[dict[str, Any]]:
    """Ask the workers to swap now; one state dict per worker.

    Workers that reported themselves in ``tiqu:workers:*`` are asked by name,
    so the call returns as soon as each has replied; one that does not reply
    within ``timeout_s`` (busy in a long batch, or gone) is listed as
    ``no reply``. With no reports at all, every worker is asked and the call
    waits the whole ``timeout_s``.
    """
    from core.queue import make_celery

    registry = registry or Registry.from_settings(settings)
    known = sorted({s["worker"] for s in registry.worker_states() if s.get("worker")})
    scope: dict[str, Any] = {"destination": known, "limit": len(known)} if known else {}
    app = make_celery(settings)
    try:
        replies = app.control.broadcast(SWAP_COMMAND, arguments={"force": True}, reply=True,
                                        timeout=timeout_s, **scope)
    finally:
        app.close()
    states = [_reply_state(worker, state)
              for reply in replies or [] for worker, state in reply.items()]
    answered = {s["worker"] for s in states}
    states += [{"worker": w, "no_reply": True} for w in known if w not in answered]
    return sorted(states, key=lambda s: str(s["worker"]))


def _reply_state(worker: str, state: Any) -> dict[str, Any]:
    """A reply as a state dict; Celery's ``{"error": ...}`` (e.g. an unknown command)
    becomes ``last_error``."""
    if not isinstance(state, dict):
        return {"worker": worker, "last_error": str(state)}
    if "serving" not in state:
        return {"worker": worker, "last_error": str(state.get("error", state))}
    return {**state, "worker": state.get("worker") or worker}


def _history_line(entry: Promotion) -> str:
    reason = f"  ({entry.reason})" if entry.reason else ""
    return f"{entry.at}  {entry.kind:<8} {entry.from_version or '-'} -> {entry.to_version}{reason}"


def _state_line(state: dict[str, Any]) -> str:
    if state.get("no_reply"):
        return f"{state['worker']}: no reply (busy or gone); it swaps before its next batch"
    line = f"{state.get('worker')}: serving {state.get('serving') or '?'}"
    if state.get("refused"):
        line += f"; REFUSED {state.get('last_error') or state['refused']}"
    elif state.get("last_error") and "serving" not in state:
        line += f"; error: {state['last_error']}"
    return line
