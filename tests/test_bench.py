"""``tiqu bench`` end to end: real workers, real Redis, the seed loop, the JSON it writes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from core.names import EXTRACT_QUEUE
from tests.conftest import ROOT
from tiqu.bench import load_items
from tiqu.bench_report import field_exact, percentile

KEYS = ("complaints_per_s", "seed_complaints_per_s", "speedup_vs_seed", "valid_rate",
        "seed_valid_rate", "field_exact", "seed_field_exact", "p50_latency_ms",
        "p95_latency_ms", "p99_latency_ms", "tokens_per_s", "producer_submit_per_s",
        "machine", "date")


def _bench(redis_url: str, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
    full_env.update({"PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", **env})
    return subprocess.run(
        [sys.executable, "-m", "tiqu", "--redis-url", redis_url, "bench", "--json", str(out),
         "--batch-size", "8", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600,
    )


def _texts_and_golds(n: int) -> tuple[list[str], list[Any]]:
    args = argparse.Namespace(n=n, data=None, data_seed=20261129)
    texts, golds, _ = load_items(args)
    assert golds is not None
    return texts, golds


def test_field_exact_and_percentiles() -> None:
    gold = {"name": "a", "address": None, "email": "e", "question": "q"}
    assert field_exact([gold, None], [gold, gold]) == 0.5
    assert field_exact([{**gold, "email": None}], [gold]) == 0.75
    assert percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert 98 < percentile(values, 99) <= 100  # type: ignore[operator]


def test_echo_bench_measures_the_queue_and_cleans_up(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "echo.json"
    proc = _bench(redis_url, out, "--engine", "echo", "--n", "300")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(KEYS) <= set(report)
    assert report["n"] == 300 and report["engine"] == "echo"
    assert report["valid_rate"] == 1.0
    texts, golds = _texts_and_golds(300)
    echoed = [{"name": None, "address": None, "email": None, "question": t} for t in texts]
    assert report["field_exact"] == field_exact(echoed, golds)  # scored against gold
    assert report["complaints_per_s"] > 0 and report["producer_submit_per_s"] > 0
    assert 0 < report["p50_latency_ms"] <= report["p95_latency_ms"] <= report["p99_latency_ms"]
    assert report["seed_complaints_per_s"] is None and report["speedup_vs_seed"] is None
    assert "complaints/s" in proc.stdout and "producer submit/s" in proc.stdout
    leftovers = [k for k in redis_db.keys("*") if not k.startswith(b"_kombu.")]
    assert leftovers == []  # results, scratch list and queue are gone


def test_bench_refuses_a_database_in_use(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    redis_db.lpush(EXTRACT_QUEUE, "someone else's message")
    proc = _bench(redis_url, tmp_path / "x.json", "--engine", "echo", "--n", "5")
    assert proc.returncode == 1
    assert "a Redis database of its own" in proc.stderr
    assert redis_db.llen(EXTRACT_QUEUE) == 1  # untouched


def test_model_bench_runs_the_seed_loop_on_a_subset(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model.json"
    proc = _bench(redis_url, out, "--n", "4", "--seed-n", "1", "--decoding", "schema",
                  TIQU_BASE_MODEL=str(tiny_model), TIQU_DTYPE="float32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["valid_rate"] == 1.0  # schema decoding: valid even from a random model
    assert report["seed_n"] == 1 and report["seed_extrapolated"] is True
    assert report["seed_merged"] is False  # the seed generates with the unfolded peft model
    assert report["seed_complaints_per_s"] > 0 and report["seed_tokens_per_s"] > 0
    assert report["speedup_vs_seed"] == (report["complaints_per_s"]
                                         / report["seed_complaints_per_s"])
    assert report["tokens_per_s"] > 0 and report["decoding"] == "schema"
    assert "extrapolated" in proc.stdout


def test_train_step_bench_times_both_ways_and_refuses_lora_from_layer_0(
    tiny_model: Path, tmp_path: Path, capsys: Any,
) -> None:
    import pytest

    from core.errors import ConfigError
    from core.settings import Settings
    from trainer.bench_step import main, measure

    settings = Settings(base_model=str(tiny_model))
    out = tmp_path / "step.json"
    assert main(settings, out, [-1], steps=2) == 0
    report = json.loads(out.read_text())
    assert report["layers"] == [1] and report["steps"] == 2 and report["rows"] > 0
    assert len(report["whole_s_per_step"]) == len(report["cached_s_per_step"]) == 2
    assert min(report["whole_s_per_step"] + report["cached_s_per_step"]) > 0
    assert report["speedup"] == round(sum(report["whole_s_per_step"])
                                      / sum(report["cached_s_per_step"]), 2)
    assert "speedup" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="LoRA starts at layer 0"):
        measure(settings, [0, 1], steps=1, rounds=1, rows=8)
