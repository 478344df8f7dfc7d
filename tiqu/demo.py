"""``tiqu demo``: the main job end to end on the embedded defaults.

Checks Redis, fetches the default model if needed, starts one worker in the
background, extracts a bundled sample of synthetic complaints, prints a few
envelopes and stops the worker it started.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from core.errors import TiquError
from core.redis import mask_url
from core.settings import DEFAULT_MODEL, Settings

SAMPLE = Path(__file__).with_name("samples") / "complaints.jsonl"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="Redis + model + one worker + a sample file, end to end")
    p.add_argument("--file", default=str(SAMPLE), help="complaints to extract (JSONL)")
    p.add_argument("-o", "--out", default="tiqu-demo-out.jsonl", help="envelopes (JSONL)")
    p.add_argument("--show", type=int, default=3, help="how many envelopes to print")
    p.add_argument("--timeout-s", type=float, default=900)
    p.set_defaults(func=run)


def _check_redis(settings: Settings) -> None:
    from producer.client import redis_client

    try:
        redis_client(settings.redis_url, settings.redis_tls_ca).ping()
    except Exception as err:
        raise TiquError(f"no Redis answers at {mask_url(settings.redis_url)} "
                        f"({type(err).__name__}); "
                        "start one, e.g. `deploy/ensure-redis.sh`") from err


def _start_worker(settings: Settings, log_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    from workers.launch import celery_argv

    env = {**os.environ, "TIQU_REDIS_URL": settings.redis_url}
    node = f"demo-{os.getpid()}@{socket.gethostname()}"
    with open(log_path, "wb") as log:
        return node, subprocess.Popen(celery_argv(node), env=env, stdout=log,
                                      stderr=subprocess.STDOUT)


def _wait_ready(settings: Settings, node: str, proc: subprocess.Popen[bytes], log_path: Path,
                timeout_s: float = 300) -> None:
    from core.queue import make_celery
    from workers.launch import wait_ready

    wait_ready(make_celery(settings), {node: proc}, timeout_s,
               lambda: log_path.read_text(errors="replace")[-2000:])


def _show(out: Path, n: int) -> None:
    lines = out.read_text(encoding="utf-8").splitlines()
    for line in lines[:n]:
        print(json.dumps(json.loads(line), ensure_ascii=False, indent=2))
    print(f"... {len(lines)} envelopes in {out}")


def score(inputs: Path, out: Path) -> dict[str, dict[str, float]] | None:
    """Per field: the share of exact values and the mean confidence, against the ``gold``
    of the input rows (matched by id); ``None`` when the input carries no gold."""
    from core.schema import FIELDS
    from core.validation import same_field

    gold = {}
    for line in inputs.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        if isinstance(row.get("gold"), dict):
            gold[row.get("id")] = row["gold"]
    envs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    envs = [e for e in envs if e.get("id") in gold]
    if not envs:
        return None
    table = {}
    for field in FIELDS:
        exact = [same_field((e.get("result") or {}).get(field), gold[e["id"]].get(field))
                 for e in envs]
        conf = [float((e.get("confidence") or {}).get(field, 0.0)) for e in envs]
        table[field] = {"exact": sum(exact) / len(exact), "confidence": sum(conf) / len(conf)}
    return table


def _print_score(table: dict[str, dict[str, float]], n: int) -> None:
    print(f"\nscore on the {n} labelled sample complaints (field exact, mean confidence):")
    for field, row in table.items():
        print(f"  {field:<9} {row['exact']:6.1%}   {row['confidence']:.2f}")
    overall = sum(r["exact"] for r in table.values()) / len(table)
    print(f"  {'all':<9} {overall:6.1%}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from inference.models import serving_adapter
    from producer.cli import send_all, write_in_order
    from producer.client import Client

    _check_redis(settings)
    if settings.base_model == DEFAULT_MODEL:
        from inference.models import fetch_default_model

        print(f"model: {fetch_default_model(settings)}")
    log_path = Path(args.out).with_suffix(".worker.log")
    node, worker = _start_worker(settings, log_path)
    try:
        _wait_ready(settings, node, worker, log_path)
        print(f"worker ready (log: {log_path}); extracting {args.file}")
        start = time.perf_counter()
        sent = send_all(Client.from_settings(settings), args.file)
        counts = write_in_order(Client.from_settings(settings), sent, args.out, args.timeout_s)
        rate = len(sent) / (time.perf_counter() - start)
        print(f"{len(sent)} complaints: {counts['ok']} ok, {counts['error']} error, "
              f"{rate:.2f} complaints/s")
        _show(Path(args.out), args.show)
        table = score(Path(args.file), Path(args.out))
        if table is not None:
            _print_score(table, len(sent))
    finally:
        worker.terminate()
        worker.wait(60)
    if serving_adapter(settings) is None:
        print("\nNote: this is the raw base model with no fine-tuned adapter, so the values "
              "are often wrong or null (every value is still copied from the text). "
              "Without TIQU_ADAPTER the embedded default model serves the adapter shipped "
              "with tiqu; `make adapter` trains one like it (see docs/training.md).")
    return 0
