"""``tiqu bench``: end-to-end throughput through Redis and real workers, against the seed loop.

One run does, in this order and never two at once (they would share the CPU):

1. the producer's ``submit_many`` rate into a scratch Redis list (deleted after);
2. the queue path: W worker subprocesses started here, N complaints submitted
   in chunks while results are polled; latency is submit -> result visible;
3. the seed loop in this process, on the same texts, model and adapter: one
   ``generate`` per text with ``max_length=2500, do_sample=True, top_k=1`` and
   the chat template, as in the seed tutorial (optionally on the first M texts,
   its rate extrapolated, and the output says so).

The Redis database comes from ``--redis-url``; the bench refuses one where other
workers are listening or the extract queue holds messages, and deletes its own
results afterwards. ``--engine echo`` replaces the model to measure the queue's
own overhead. ``--gpu-sweep`` runs the GPU decode sweep of :mod:`tiqu.bench_gpu`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError, TiquError
from core.names import EXTRACT_QUEUE
from core.schema import answer_json
from core.settings import Settings
from tiqu.bench_report import (
    SEED_MAX_LENGTH,
    QueueRun,
    SeedRun,
    machine_info,
    print_table,
    summarize,
)
from workers.launch import celery_argv
from workers.launch import wait_ready as launch_wait_ready

#: The seed tutorial's generation arguments, verbatim.
SEED_GENERATE = {"max_length": SEED_MAX_LENGTH, "do_sample": True, "top_k": 1}
#: Messages sent for the producer-rate measurement (cycled from the bench texts).
PRODUCER_SAMPLE = 5000
SUBMIT_CHUNK = 100
Gold = dict[str, str | None]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="end-to-end throughput benchmark against the seed loop")
    p.add_argument("--n", type=int, default=64, help="complaints through the queue")
    p.add_argument("--workers", type=int, default=1, help="worker processes to start")
    p.add_argument("--engine", choices=["model", "echo"], default="model")
    p.add_argument("--adapter", help="LoRA adapter folder, used by the workers and the seed loop")
    p.add_argument("--decoding", choices=["copy", "schema", "none"],
                   help="decoding mode of the workers (default: TIQU_DECODING)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--seed-n", type=int, help="seed loop on the first M texts only; "
                   "its rate is extrapolated (default: all N)")
    p.add_argument("--no-seed", action="store_true", help="skip the seed loop")
    p.add_argument("--seed-merged", action="store_true", help="seed loop with the adapter "
                   "folded into the weights, as the workers serve it (the seed does not fold)")
    p.add_argument("--data", type=Path, help="records file (seed, chat or gold format) "
                   "instead of held-out synthetic complaints")
    p.add_argument("--data-seed", type=int, default=20261129, help="synthetic data seed")
    p.add_argument("--batch-size", type=int, help="worker batch size (default: TIQU_BATCH_SIZE)")
    p.add_argument("--flush-interval-s", type=float, help="default: TIQU_FLUSH_INTERVAL_S")
    p.add_argument("--timeout-s", type=float, default=7200, help="give up on the queue run")
    p.add_argument("--threads", type=int, help="torch threads for each worker and for the "
                   "seed loop (default: torch's choice; split between workers when W > 1)")
    p.add_argument("--loads", help="after the saturated run, Poisson arrivals at these "
                   "fractions of capacity, e.g. 0.5,0.8 (p50/p95 latency at each)")
    p.add_argument("--capacity", type=float, help="--loads: complaints/s that fraction 1.0 "
                   "means (default: this run's saturated rate), to load two runs alike")
    p.add_argument("--load-n", type=int, help="--loads: complaints per load (default: --n)")
    p.add_argument("--gpu-sweep", action="store_true",
                   help="decode sweep of a random Qwen3-0.6B on the GPU instead (see bench_gpu)")
    p.add_argument("--train-step", action="store_true",
                   help="time a LoRA training step with and without the frozen prefix instead")
    p.add_argument("--train-layers", default="18-29",
                   help="--train-step: LoRA layers (top4, 18-29)")
    p.add_argument("--train-steps", type=int, default=10, help="--train-step: steps a round")
    p.set_defaults(func=run)


# --- data -------------------------------------------------------------------------


def load_items(args: argparse.Namespace) -> tuple[list[str], list[Gold] | None, str]:
    """``(texts, golds, source)``: N held-out synthetic complaints, or N from ``--data``.

    Synthetic texts come from the test split (:func:`trainer.data.split_of`), so
    an adapter trained on the train split of any seed has not seen them.
    """
    from trainer.data import load_records, split_of, synth_records

    if args.data:
        records = load_records(args.data)
        source = f"file {Path(args.data).name}"
    else:
        pool = synth_records(12 * args.n + 50, seed=args.data_seed)
        records = [r for r in pool if split_of(r.text) == "test"]
        source = f"synth_records(seed={args.data_seed}), test split"
    if len(records) < args.n:
        raise ConfigError(f"--n is {args.n} but the data has only {len(records)} records")
    records = records[: args.n]
    return [r.text for r in records], [dict(r.gold) for r in records], source


# --- workers ----------------------------------------------------------------------


@dataclass
class Fleet:
    """Worker subprocesses started by the bench, with their node names and logs."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in self.logs if p.exists())

    def stop(self, timeout_s: float = 30) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def worker_env(settings: Settings, args: argparse.Namespace, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TIQU_REDIS_URL": settings.redis_url, "TIQU_ENGINE": args.engine,
                "TIQU_DECODING": args.decoding or settings.decoding,
                "TIQU_BATCH_SIZE": str(args.batch_size or settings.batch_size),
                "TIQU_FLUSH_INTERVAL_S": str(args.flush_interval_s or settings.flush_interval_s),
                "PYTHONUNBUFFERED": "1"})
    if settings.result_url:
        env["TIQU_RESULT_URL"] = settings.result_url
    if args.adapter:
        env["TIQU_ADAPTER"] = str(Path(args.adapter).resolve())
    if threads:  # W workers share the cores instead of each spinning up all of them
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def start_fleet(settings: Settings, args: argparse.Namespace, log_dir: Path) -> Fleet:
    """Start ``args.workers`` solo-pool workers on the extract queue."""
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or (max(1, cores // args.workers) if args.workers > 1 else None)
    env = worker_env(settings, args, threads)
    run_id = uuid.uuid4().hex[:6]
    fleet = Fleet()
    for i in range(args.workers):
        name = f"bench{i}-{run_id}@{socket.gethostname()}"
        log_path = log_dir / f"worker{i}.log"
        cmd = celery_argv(name, EXTRACT_QUEUE)
        with open(log_path, "wb") as fh:
            fleet.procs.append(subprocess.Popen(cmd, env=env, stdout=fh,
                                                stderr=subprocess.STDOUT))
        fleet.names.append(name)
        fleet.logs.append(log_path)
    return fleet


def wait_ready(app: Any, fleet: Fleet, timeout_s: float) -> float:
    """Seconds until every worker answers a ping (its model is loaded by then)."""
    return launch_wait_ready(app, dict(zip(fleet.names, fleet.procs, strict=True)),
                             timeout_s, fleet.tail)


def check_isolated(app: Any, client: Any) -> None:
    """Refuse a Redis database that other workers or queued messages are using."""
    others = [n for reply in app.control.ping(timeout=1.0) or [] for n in reply]
    queued = client.queue_length()
    if others or queued:
        raise ConfigError(
            f"the bench needs a Redis database of its own: workers {others} listen and "
            f"{queued} messages wait on '{EXTRACT_QUEUE}'; pass --redis-url redis://host:6379/N")


# --- the measured paths -------------------------------------------------------------


@dataclass
class _Sent:
    """What a drive has sent: per complaint its envelope, task id, send and answer times."""

    n: int
    envs: list[Any] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)  # task id -> index

    def __post_init__(self) -> None:
        self.envs, self.task_ids = [None] * self.n, [""] * self.n
        self.sent_at, self.done_at = [0.0] * self.n, [0.0] * self.n

    def sent(self, i: int, task_id: str, at: float) -> None:
        self.sent_at[i], self.pending[task_id], self.task_ids[i] = at, i, task_id

    def poll(self, client: Any) -> None:
        ids = list(self.pending)
        for task_id, env in zip(ids, client.poll(ids), strict=True):
            if env is not None:
                i = self.pending.pop(task_id)
                self.envs[i], self.done_at[i] = env, time.perf_counter()

    def run(self, start: float) -> QueueRun:
        latencies = [(d - s) * 1000 for s, d in zip(self.sent_at, self.done_at, strict=True)]
        return QueueRun(self.envs, latencies, max(self.done_at) - start, self.task_ids)


def drive(client: Any, texts: list[str], timeout_s: float) -> QueueRun:
    """Submit in chunks while polling results; latency counts from before each chunk's send."""
    n = len(texts)
    track = _Sent(n)
    start = time.perf_counter()
    for lo in range(0, n, SUBMIT_CHUNK):
        hi = min(n, lo + SUBMIT_CHUNK)
        before = time.perf_counter()
        for i, s in zip(range(lo, hi), client.submit_many(
                [(f"bench-{i}", texts[i]) for i in range(lo, hi)]), strict=True):
            track.sent(i, s.task_id, before)
        track.poll(client)
    while track.pending:
        if time.perf_counter() - start > timeout_s:
            raise TiquError(f"{len(track.pending)} of {n} results missing after {timeout_s} s")
        time.sleep(0.002)
        track.poll(client)
    return track.run(start)


def drive_poisson(client: Any, texts: list[str], rate: float, timeout_s: float,
                  tag: str, seed: int = 0) -> QueueRun:
    """Send one complaint at a time at Poisson arrivals of ``rate`` per second (seeded
    gaps); latency counts from each one's send to its result."""
    rng = random.Random(seed)
    n = len(texts)
    track = _Sent(n)
    start = time.perf_counter()
    due, at = [], start
    for _ in range(n):
        at += rng.expovariate(rate)
        due.append(at)
    i = 0
    while i < n or track.pending:
        now = time.perf_counter()
        if now - due[-1] > timeout_s:
            raise TiquError(f"{len(track.pending) + n - i} of {n} results missing at "
                            f"{rate:.3f}/s")
        while i < n and due[i] <= now:
            sent = client.submit_many([(f"bench-{tag}-{i}", texts[i])])[0]
            track.sent(i, sent.task_id, time.perf_counter())
            i += 1
        if track.pending:
            track.poll(client)
        time.sleep(0.005)
    return track.run(start)


def under_load(client: Any, texts: list[str], args: argparse.Namespace,
               capacity: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Each ``--loads`` fraction of ``capacity``: its rate, p50/p95 latency and the rate
    answered; and the task ids, for deletion."""
    from tiqu.bench_report import percentile

    rows, ids = [], []
    n = args.load_n or len(texts)
    for k, frac in enumerate(float(f) for f in args.loads.split(",")):
        rate = frac * capacity
        run_ = drive_poisson(client, [texts[i % len(texts)] for i in range(n)], rate,
                             args.timeout_s, tag=f"load{k}", seed=k)
        ids += run_.task_ids
        ok = sum(1 for e in run_.envelopes if e and e.get("status") == "ok")
        rows.append({"fraction": frac, "rate_per_s": rate, "n": n, "ok": ok,
                     "p50_latency_ms": percentile(run_.latencies_ms, 50),
                     "p95_latency_ms": percentile(run_.latencies_ms, 95),
                     "answered_per_s": n / run_.wall_s})
        print(f"load {frac:.2f} x {capacity:.3f}/s = {rate:.3f}/s, {n} complaints: "
              f"p50 {rows[-1]['p50_latency_ms']:.0f} ms, p95 {rows[-1]['p95_latency_ms']:.0f} ms",
              flush=True)
    return rows, ids


def producer_rate(client: Any, texts: list[str]) -> float:
    """``submit_many`` messages/s into a scratch list that no worker reads (deleted after)."""
    from producer import Client

    scratch = Client(client.broker, queue=f"bench-submit-{uuid.uuid4().hex[:8]}")
    items = [(f"p{i}", texts[i % len(texts)]) for i in range(PRODUCER_SAMPLE)]
    start = time.perf_counter()
    scratch.submit_many(items)
    elapsed = time.perf_counter() - start
    client.broker.delete(scratch.queue)
    return len(items) / elapsed


def seed_loop(settings: Settings, texts: list[str], threads: int | None = None,
              merged: bool = False) -> SeedRun:
    """One ``generate`` per text, exactly as the seed tutorial (same model and adapter).

    The seed generates with the peft model as trained, the adapter not folded
    into the weights; ``merged`` folds it, as the workers do, to show how much
    of the difference that alone makes.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    from core.prompting import build_messages
    from core.validation import parse_complaint
    from inference.engine import Engine

    engine = Engine(settings.model_copy(update={"merge_adapter": merged}))
    model, tok = engine.model, engine.tokenizer
    run = SeedRun([], 0.0, 0)
    for text in texts:
        inputs = tok.apply_chat_template(
            build_messages(text), add_generation_prompt=True, tokenize=True,
            return_tensors="pt", return_dict=True, enable_thinking=False).to(engine.device)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inputs, **SEED_GENERATE)
        run.seconds += time.perf_counter() - start
        new = out[0, inputs["input_ids"].shape[1]:]
        run.tokens += int(new.shape[0])
        run.capped += int(out.shape[1] >= SEED_MAX_LENGTH)
        try:
            run.results.append(parse_complaint(tok.decode(new, skip_special_tokens=True))
                               .model_dump())
        except TiquError:
            run.results.append(None)
    return run


def answer_tokens(settings: Settings, results: list[Gold | None]) -> int:
    """Tokens of the valid answers' canonical JSON (what the workers generated, give or
    take the end-of-turn token)."""
    from transformers import AutoTokenizer

    from inference.models import hub_kwargs, resolve_base_model

    tok = AutoTokenizer.from_pretrained(resolve_base_model(settings), **hub_kwargs(settings))
    return sum(len(tok(answer_json(r), add_special_tokens=False)["input_ids"])
               for r in results if r is not None)


def run_queue(settings: Settings, args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """Producer rate, then the fleet's run; the bench's results are deleted afterwards."""
    from core.names import result_key
    from core.queue import make_celery
    from producer import Client

    app, client = make_celery(settings), Client.from_settings(settings)
    check_isolated(app, client)
    out: dict[str, Any] = {"producer_submit_per_s": producer_rate(client, texts)}
    with tempfile.TemporaryDirectory(prefix="tiqu-bench-") as tmp:
        fleet = start_fleet(settings, args, Path(tmp))
        try:
            out["workers_ready_s"] = wait_ready(app, fleet, timeout_s=900)
            out["queue"] = drive(client, texts, args.timeout_s)
            extra: list[str] = []
            if args.loads:
                capacity = args.capacity or len(texts) / out["queue"].wall_s
                out["capacity_per_s"] = capacity
                out["loads"], extra = under_load(client, texts, args, capacity)
        finally:
            fleet.stop()
    ids = out["queue"].task_ids + extra
    for lo in range(0, len(ids), 1000):
        client.backend.delete(*[result_key(t) for t in ids[lo:lo + 1000]])
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.gpu_sweep:
        from tiqu.bench_gpu import main as gpu_main

        return gpu_main(args.json)
    if args.train_step:
        from trainer.bench_step import main as step_main
        from trainer.cli import parse_layers

        return step_main(settings, args.json, parse_layers(args.train_layers), args.train_steps)
    if args.n < 1 or args.workers < 1:
        raise ConfigError(f"--n and --workers must be >= 1, got {args.n} and {args.workers}")
    adapter = args.adapter or settings.adapter
    texts, golds, source = load_items(args)
    measured = run_queue(settings, args, texts)
    queue: QueueRun = measured.pop("queue")
    model_settings = settings.model_copy(update={"adapter": adapter})
    seed_n = min(args.seed_n or args.n, args.n) if args.engine == "model" and not args.no_seed \
        else 0
    seed = seed_loop(model_settings, texts[:seed_n], args.threads, args.seed_merged) \
        if seed_n else None
    results = [e.get("result") if e.get("status") == "ok" else None for e in queue.envelopes]
    tokens = answer_tokens(model_settings, results) if args.engine == "model" else None
    report = summarize(queue, seed, golds, tokens) | measured | {
        "n": args.n, "seed_n": seed_n, "seed_extrapolated": 0 < seed_n < args.n,
        "seed_merged": args.seed_merged,
        "workers": args.workers, "engine": args.engine, "threads": args.threads,
        "decoding": args.decoding or settings.decoding,
        "batch_size": args.batch_size or settings.batch_size,
        "flush_interval_s": args.flush_interval_s or settings.flush_interval_s,
        "adapter": adapter, "base_model": settings.base_model, "data": source,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
    }
    if args.engine == "model":
        from inference.models import pick_device, pick_dtype

        report["dtype"] = str(pick_dtype(settings, pick_device(settings))).removeprefix("torch.")
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0
