"""``tiqu enqueue FILE`` and ``tiqu extract FILE -o OUT.jsonl``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from core.settings import Settings
from producer.client import Client, Submitted
from producer.sources import read_source


def add_parser(sub: Any) -> None:
    p = sub.add_parser("enqueue", help="enqueue complaints; prints task ids")
    p.add_argument("file", help="JSONL (id, text), CSV (text column), text lines, or - for stdin")
    p.set_defaults(func=run_enqueue)
    p = sub.add_parser("extract", help="enqueue a file and collect envelopes in input order")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True, help="output JSONL, one envelope per line")
    p.add_argument("--timeout-s", type=float, default=None, help="give up after this long")
    p.set_defaults(func=run_extract)


def _progress(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, dynamic_ncols=True)


def send_all(client: Client, path: str) -> list[Submitted]:
    """Read ``path`` and send everything, pipelined in chunks, with a progress bar."""
    items = list(read_source(path))
    sent: list[Submitted] = []
    with _progress(len(items), "enqueue") as bar:
        for start in range(0, len(items), 1000):
            sent.extend(client.submit_many(items[start:start + 1000]))
            bar.update(min(1000, len(items) - start))
    return sent


def run_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.from_settings(settings)
    for s in send_all(client, args.file):
        print(f"{s.id}\t{s.task_id}")
    return 0


def run_extract(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.from_settings(settings)
    start = time.perf_counter()
    sent = send_all(client, args.file)
    summary = write_in_order(client, sent, args.out, args.timeout_s)
    elapsed = time.perf_counter() - start
    rate = len(sent) / elapsed if elapsed else 0.0
    print(f"{len(sent)} complaints: {summary['ok']} ok, {summary['error']} error "
          f"in {elapsed:.1f} s ({rate:.2f}/s) -> {args.out}", file=sys.stderr)
    return 0


def write_in_order(
    client: Client, sent: list[Submitted], out: str, timeout_s: float | None
) -> dict[str, int]:
    """Write envelopes to ``out`` in input order as they arrive (buffering gaps)."""
    ready: dict[int, dict[str, Any]] = {}
    counts = {"ok": 0, "error": 0}
    nxt = 0
    with open(out, "w", encoding="utf-8") as fh, _progress(len(sent), "extract") as bar:
        for i, env in client.collect([s.task_id for s in sent], timeout_s=timeout_s):
            if env.get("id") is None:
                env["id"] = sent[i].id
            ready[i] = env
            counts["ok" if env.get("status") == "ok" else "error"] += 1
            bar.update(1)
            while nxt in ready:
                fh.write(json.dumps(ready.pop(nxt), ensure_ascii=False) + "\n")
                nxt += 1
        fh.flush()
    return counts
