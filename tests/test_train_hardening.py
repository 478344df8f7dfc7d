"""``tiqu.train`` under hostile requests and worker deaths, on a real worker and real Redis.

The invariants: the task reads only regular files below the data root and
writes only below the runs root; rows and data sets over their size limits are
refused; no record text reaches the message headers (Flower's view) or the
worker's log; a run whose worker is SIGKILLed comes back and finishes from its
last checkpoint, leaving nothing unacknowledged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from core.manifest import Manifest
from core.names import DEAD_LETTER_KEY, TRAIN_QUEUE, TRAIN_TASK
from core.queue import make_celery
from core.settings import Settings
from tests.conftest import ROOT, worker_env
from tests.test_train_task import follow, start_train_worker
from trainer.data import record_to_gold, save_records, synth_records

FAST = {"batch_size": 4, "eval_every": 1000, "log_every": 1, "eval_limit": 0,
        "eval_batch_size": 2, "max_len": 1024, "progress": False}
ROW_LIMIT, TOTAL_LIMIT = 4000, 60000


def roots(tmp_path: Path) -> tuple[Path, Path]:
    data_root, runs_root = tmp_path / "train-data", tmp_path / "runs"
    data_root.mkdir()
    runs_root.mkdir()
    return data_root, runs_root


def train_env(redis_url: str, model: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    data_root, runs_root = tmp_path / "train-data", tmp_path / "runs"
    return worker_env(redis_url, model, TIQU_TRAIN_DATA_DIR=str(data_root),
                      TIQU_TRAIN_RUNS_DIR=str(runs_root),
                      TIQU_TRAIN_MAX_ROW_BYTES=str(ROW_LIMIT),
                      TIQU_TRAIN_MAX_TOTAL_BYTES=str(TOTAL_LIMIT), **extra)


def failure(app: Any, payload: dict[str, Any], timeout_s: float = 120) -> tuple[str, str]:
    """Send one request and return ``(exception type, message)`` of its failure."""
    result = app.send_task(TRAIN_TASK, args=[payload])
    follow(result, timeout_s)
    assert result.state == "FAILURE", f"{payload} -> {result.state}: {result.info}"
    return type(result.info).__name__, str(result.info)


def test_paths_outside_the_roots_and_oversized_data_are_refused(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    data_root, runs_root = roots(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    rows = [record_to_gold(r) for r in synth_records(20, seed=2)]
    good = save_records(synth_records(20, seed=2), data_root / "good.jsonl", fmt="gold")
    secret = save_records(synth_records(3, seed=4), outside / "secret.jsonl", fmt="gold")
    (data_root / "climb").symlink_to(secret)
    (data_root / "zero").symlink_to("/dev/zero")
    (data_root / "folder").mkdir()
    os.mkfifo(data_root / "fifo")
    (runs_root / "escape").symlink_to(outside, target_is_directory=True)
    big = data_root / "big.jsonl"
    big.write_text((json.dumps(rows[0], ensure_ascii=False) + "\n") * 400)
    wide = data_root / "wide.jsonl"
    wide_row = {**rows[1], "text": rows[1]["text"] + " " * (2 * ROW_LIMIT)}
    wide.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n"
                    + json.dumps(wide_row, ensure_ascii=False) + "\n")
    workers.append(start_train_worker(train_env(redis_url, tiny_model, tmp_path),
                                      tmp_path / "worker.log"))
    app = make_celery(Settings(redis_url=redis_url))
    config = {**FAST, "max_steps": 1}
    refused_data = {
        "/dev/zero": "outside", "/etc/passwd": "outside", str(secret): "outside",
        str(data_root / ".." / "outside" / "secret.jsonl"): "outside",
        "../outside/secret.jsonl": "outside", str(data_root / "climb"): "outside",
        str(data_root / "zero"): "outside", "folder": "not a regular file",
        "fifo": "not a regular file", "missing.jsonl": "does not exist",
    }
    for data, why in refused_data.items():
        kind, message = failure(app, {"data": data, "config": config})
        assert kind == "PathRefused" and message.startswith("data: "), (data, message)
        assert why in message and str(data_root) in message, (data, message)
    refused_out = [str(outside / "run"), "../outside/run", "escape/run", str(runs_root)]
    for out in refused_out:
        kind, message = failure(app, {"data": str(good), "out": out, "config": config})
        assert kind == "PathRefused" and message.startswith("out: "), (out, message)
        assert str(runs_root) in message
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jsonl"]  # nothing written
    # sizes: a file over the total, a row over the row limit, inline rows over either
    kind, message = failure(app, {"data": str(big), "config": config})
    assert kind == "DataTooLarge" and "train_max_total_bytes" in message
    kind, message = failure(app, {"data": str(wide), "config": config})
    assert kind == "DataTooLarge" and "row 2 " in message and "train_max_row_bytes" in message
    kind, message = failure(app, {"records": [rows[0], wide_row], "config": config})
    assert kind == "DataTooLarge" and "row 2 " in message and "train_max_row_bytes" in message
    kind, message = failure(app, {"records": rows * 40, "config": config})
    assert kind == "DataTooLarge" and "train_max_total_bytes" in message
    assert not any(r["text"][:8] in message for r in rows)
    # within the roots and limits, the same worker trains
    result = app.send_task(TRAIN_TASK, args=[{"data": "good.jsonl", "out": "ok", "config": config}])
    follow(result, 180)
    assert result.successful(), result.info
    assert Path(result.get()["run_dir"]) == runs_root / "ok"
    assert (runs_root / "ok" / "adapter" / "adapter_model.safetensors").is_file()
    assert workers[0].proc.poll() is None


def test_inline_records_never_reach_message_headers_or_the_worker_log(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    roots(tmp_path)
    records = synth_records(24, seed=6)
    data = save_records(records, tmp_path / "mine.jsonl", fmt="gold")
    env = {**train_env(redis_url, tiny_model, tmp_path), "TIQU_REDIS_URL": redis_url}
    sent = subprocess.run(
        [sys.executable, "-m", "tiqu", "train", "--submit", "--inline", "--data", str(data),
         "--max-steps", "1", "--eval-limit", "0", "--batch-size", "4", "--timeout-s", "0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 1 and "still running" in sent.stderr, sent.stderr
    # any client of core.queue's app, without asking for it (a retry is sent this way)
    app = make_celery(Settings(redis_url=redis_url))
    config = {"max_steps": 1, "eval_limit": 0, "batch_size": 4, "progress": False}
    app.send_task(TRAIN_TASK, kwargs={"payload": {
        "records": [record_to_gold(r) for r in records], "config": config}})
    # a malformed request: rows as bare strings, which Celery's own repr would print
    malformed = app.send_task(TRAIN_TASK, args=[{"records": [r.text for r in records]}])
    raw = redis_db.lrange(TRAIN_QUEUE, 0, -1)
    assert len(raw) == 3
    texts = [r.text for r in records] + [v for r in records for v in r.gold.values() if v]
    for message in map(json.loads, raw):
        headers = message["headers"]
        assert headers["task"] == TRAIN_TASK
        shown = headers["argsrepr"] + headers["kwargsrepr"]
        assert "'<24 rows redacted>'" in shown, shown
        assert not [t for t in texts if t in shown + json.dumps(message["properties"])]
    worker = start_train_worker(env, tmp_path / "worker.log")
    workers.append(worker)
    deadline = time.monotonic() + 180
    while redis_db.llen(TRAIN_QUEUE) or redis_db.hlen("unacked"):
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    log = worker.log()
    assert log.count("succeeded") == 2, log[-3000:]
    follow(malformed, 30)
    assert type(malformed.info).__name__ == "ConfigError"
    assert not [t for t in texts if t in log + str(malformed.info)]


def wait_for_checkpoint(run_dir: Path, timeout_s: float) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sorted(run_dir.glob("checkpoints/checkpoint-*/trainer_state.json"))
        if done:
            return done[0].parent
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {run_dir} after {timeout_s} s")


def test_a_killed_train_worker_comes_back_and_resumes_from_its_checkpoint(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    _, runs_root = roots(tmp_path)
    env = train_env(redis_url, tiny_model, tmp_path, TIQU_VISIBILITY_TIMEOUT_S="8",
                    TIQU_DEAD_WORKER_S="5")
    first = start_train_worker(env, tmp_path / "first.log")
    workers.append(first)
    app = make_celery(Settings(redis_url=redis_url))
    rows = [record_to_gold(r) for r in synth_records(40, seed=8)]
    config = {**FAST, "max_steps": 40, "save_every": 2, "save_every_s": None}
    result = app.send_task(TRAIN_TASK, args=[{"records": rows, "config": config}])
    run_dir = runs_root / result.id
    checkpoint = wait_for_checkpoint(run_dir, timeout_s=180)
    first.kill()
    killed_at = time.monotonic()
    assert not (run_dir / "manifest.json").exists(), "the run ended before the kill"
    assert redis_db.hlen("unacked") == 1  # acknowledged only when a run ends
    second = start_train_worker(env, tmp_path / "second.log")
    workers.append(second)
    follow(result, timeout_s=300)
    assert result.successful(), f"{result.info}\n{second.log()[-3000:]}"
    manifest = Manifest.load(run_dir)
    resumed = manifest.timings["resumed_from_step"]
    assert resumed >= int(checkpoint.name.split("-")[1]) > 0
    assert manifest.timings["steps"] == 40 and manifest.model_dump()["task_id"] == result.id
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert f"from step {resumed}" in second.log()
    assert time.monotonic() - killed_at < 300
    # A delivery held past the visibility timeout may come round once more; it finds
    # the finished run and answers from it. Within a bound, nothing is left behind.
    deadline = time.monotonic() + 60
    while redis_db.llen(TRAIN_QUEUE) or redis_db.hlen("unacked"):
        assert time.monotonic() < deadline, second.log()[-4000:]
        time.sleep(0.2)
    assert not redis_db.keys("tiqu:train:lease:*")  # the lease went with the run
    assert result.get()["version"] == manifest.version  # every answer is the same run



def test_checkpoints_follow_the_clock_as_well_as_the_step_count(
    tmp_path: Path, tiny_model: Path
) -> None:
    from trainer.lora import TrainConfig, train

    config = TrainConfig(max_steps=3, save_every=1000, save_every_s=1e-6, keep_checkpoints=True,
                         **FAST)
    train(Settings(base_model=str(tiny_model)), synth_records(24, 4), tmp_path / "run", config)
    kept = sorted(p.name for p in (tmp_path / "run/checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-3"]  # one per step; the Trainer keeps two
    with_steps_only = TrainConfig(max_steps=3, save_every=1000, save_every_s=None,
                                  keep_checkpoints=True, **FAST)
    train(Settings(base_model=str(tiny_model)), synth_records(24, 4), tmp_path / "run2",
          with_steps_only)
    kept = sorted(p.name for p in (tmp_path / "run2/checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-3"]  # the last step only


def test_a_hostile_item_on_the_train_queue_is_dead_lettered_and_the_worker_serves_on(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    """The train worker has the extract workers' guard (core.transport): JSON nested
    2,000 deep, pushed raw onto the ``train`` list, neither stops it nor comes back."""
    roots(tmp_path)
    w = start_train_worker(train_env(redis_url, tiny_model, tmp_path), tmp_path / "w.log")
    workers.append(w)
    redis_db.lpush(TRAIN_QUEUE, "[" * 2000 + "]" * 2000)
    app = make_celery(Settings(redis_url=redis_url))
    kind, message = failure(app, {"data": "missing.jsonl", "config": {}})
    assert kind == "PathRefused" and w.proc.poll() is None
    reasons = [json.loads(x)["reason"] for x in redis_db.lrange(DEAD_LETTER_KEY, 0, -1)]
    assert reasons == ["nested_too_deep"]
    time.sleep(2)
    assert redis_db.llen(TRAIN_QUEUE) == 0 and redis_db.hlen("unacked") == 0
    assert "RecursionError" not in w.log() and "Unrecoverable" not in w.log()
