"""Numbers and printout of ``tiqu bench``: field exact match, percentiles, the table."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from typing import Any

from core.schema import FIELDS
from core.validation import same_field

Gold = dict[str, str | None]
SEED_MAX_LENGTH = 2500


@dataclass
class QueueRun:
    """Envelopes in submission order, per-task latency and the run's wall time."""

    envelopes: list[dict[str, Any]]
    latencies_ms: list[float]
    wall_s: float
    task_ids: list[str]


@dataclass
class SeedRun:
    """The seed loop's answers (None when unparseable), seconds, generated tokens and
    how many texts ran on to ``max_length`` (no end-of-turn token)."""

    results: list[Gold | None]
    seconds: float
    tokens: int
    capped: int = 0


def field_exact(results: list[Gold | None], golds: list[Gold] | None) -> float | None:
    """Share of the 4 x N fields equal to gold (:func:`core.validation.same_field`: width
    and whitespace folded; null = null; invalid = wrong)."""
    if golds is None:
        return None
    hits = sum(res is not None and same_field(res.get(k), gold.get(k))
               for res, gold in zip(results, golds, strict=True) for k in FIELDS)
    return hits / (len(FIELDS) * len(golds)) if golds else None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between ranks; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, int(q) - 1))]


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
            "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def _rate(n: int, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def summarize(run_: QueueRun, seed: SeedRun | None, golds: list[Gold] | None,
              tokens: int | None) -> dict[str, Any]:
    """The result keys (see docs/bench-throughput.md for their meaning)."""
    results = [e.get("result") if e.get("status") == "ok" else None for e in run_.envelopes]
    n = len(results)
    out: dict[str, Any] = {
        "complaints_per_s": _rate(n, run_.wall_s), "queue_wall_s": run_.wall_s,
        "valid_rate": sum(r is not None for r in results) / n,
        "field_exact": field_exact(results, golds),
        "p50_latency_ms": percentile(run_.latencies_ms, 50),
        "p95_latency_ms": percentile(run_.latencies_ms, 95),
        "p99_latency_ms": percentile(run_.latencies_ms, 99),
        "tokens_per_s": _rate(tokens, run_.wall_s) if tokens is not None else None,
    }
    seed_keys = ("seed_complaints_per_s", "seed_valid_rate", "seed_field_exact",
                 "seed_tokens_per_s", "seed_ran_to_max_length", "speedup_vs_seed")
    out.update(dict.fromkeys(seed_keys))
    if seed is not None and seed.results:
        m = len(seed.results)
        out["seed_complaints_per_s"] = _rate(m, seed.seconds)
        out["seed_valid_rate"] = sum(r is not None for r in seed.results) / m
        out["seed_field_exact"] = field_exact(seed.results, golds[:m] if golds else None)
        out["seed_tokens_per_s"] = _rate(seed.tokens, seed.seconds)
        out["seed_ran_to_max_length"] = seed.capped
        if out["seed_complaints_per_s"] and out["complaints_per_s"]:
            out["speedup_vs_seed"] = out["complaints_per_s"] / out["seed_complaints_per_s"]
    return out


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("complaints/s", _fmt(r["complaints_per_s"]), _fmt(r["seed_complaints_per_s"], ".3f")),
        ("latency p50/p95/p99 ms",
         "/".join(_fmt(r[k], ".0f") for k in ("p50_latency_ms", "p95_latency_ms",
                                              "p99_latency_ms")), "-"),
        ("tokens/s", _fmt(r["tokens_per_s"], ".1f"), _fmt(r["seed_tokens_per_s"], ".1f")),
        ("valid rate", _fmt(r["valid_rate"], ".3f"), _fmt(r["seed_valid_rate"], ".3f")),
        ("field exact", _fmt(r["field_exact"], ".3f"), _fmt(r["seed_field_exact"], ".3f")),
    ]
    print(f"\n{r['n']} complaints ({r['data']}), {r['workers']} worker(s), engine {r['engine']}, "
          f"decoding {r['decoding']}, batch {r['batch_size']}, adapter {r['adapter'] or '-'}")
    print(f"{'':<24}{'queue':>16}{'seed loop':>16}")
    for name, ours, seed in rows:
        print(f"{name:<24}{ours:>16}{seed:>16}")
    print(f"{'speedup vs seed':<24}{_fmt(r['speedup_vs_seed'], '.1f') + 'x':>16}")
    print(f"{'producer submit/s':<24}{_fmt(r['producer_submit_per_s'], '.0f'):>16}")
    if r["seed_ran_to_max_length"]:
        print(f"{r['seed_ran_to_max_length']} seed-loop text(s) never ended their turn and "
              f"ran on to max_length={SEED_MAX_LENGTH}.")
    if r["seed_n"] and r["seed_n"] < r["n"]:
        print(f"seed loop ran on the first {r['seed_n']} of {r['n']} texts; "
              "its rate is extrapolated from them.")


