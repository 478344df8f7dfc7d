"""``tiqu.train`` on a real ``celery -A trainer worker -Q train`` process and real Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from core.errors import ConfigError, DataError
from core.manifest import Manifest
from core.names import TRAIN_QUEUE, TRAIN_TASK
from core.queue import make_celery
from core.settings import Settings
from tests.conftest import ROOT, WorkerProc, worker_env
from tests.test_metrics import free_port
from trainer.data import record_to_gold, synth_records
from trainer.tasks import MAX_INLINE_ROWS, parse_request

CONFIG = {"max_steps": 3, "batch_size": 4, "eval_every": 2, "save_every": 2, "log_every": 1,
          "eval_limit": 2, "eval_batch_size": 2, "max_len": 1024, "progress": False}


def start_train_worker(env: dict[str, str], log_path: Path, timeout_s: float = 120) -> WorkerProc:
    """``celery -A trainer worker -Q train --pool solo``, returned once it consumes."""
    cmd = [sys.executable, "-m", "celery", "-A", "trainer", "worker", "--pool", "solo",
           "-Q", TRAIN_QUEUE, "-n", "trainer@tests", "--loglevel", "INFO",
           "--without-mingle", "--without-gossip"]
    fh = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    worker = WorkerProc("trainer@tests", proc, log_path, env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"train worker exited:\n{worker.log()[-3000:]}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"train worker not ready in {timeout_s} s:\n{worker.log()[-3000:]}")


def follow(result: Any, timeout_s: float) -> list[dict[str, Any]]:
    """Poll a task until it is ready; returns every distinct PROGRESS meta seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        # one read per poll, so the state and its meta always belong together
        meta = result.backend.get_task_meta(result.id)
        if meta["status"] in ("SUCCESS", "FAILURE"):
            return seen
        assert time.monotonic() < deadline, f"task {result.id} not done in {timeout_s} s"
        if meta["status"] == "PROGRESS" and (not seen or meta["result"] != seen[-1]):
            seen.append(dict(meta["result"]))
        time.sleep(0.02)


def test_request_is_checked_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'data'"):
        parse_request({"config": {"r": 4}})
    with pytest.raises(ConfigError, match=r"rank: Extra inputs are not permitted"):
        parse_request({"data": "x.jsonl", "config": {"rank": 4}})
    with pytest.raises(ConfigError, match=r"records: List should have at most 5000"):
        parse_request({"records": [{}] * (MAX_INLINE_ROWS + 1)})
    with pytest.raises(ConfigError, match="r must be >= 1, got 0"):
        parse_request({"data": "x.jsonl", "config": {"r": 0}})
    request = parse_request({"records": [{"text": "张三", "gold": {"name": "李四"}}]})
    with pytest.raises(DataError, match="row 1: gold 'name' value '李四' not found"):
        request.load()


def test_train_task_runs_on_a_real_worker_and_reports_progress(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    env = worker_env(redis_url, tiny_model, OMP_NUM_THREADS="1",
                     TIQU_ADAPTER_DIR=str(tmp_path / "adapters"),
                     TIQU_TRAIN_DATA_DIR=str(tmp_path / "train-data"),
                     TIQU_METRICS_PORT=str(port := free_port()))
    worker = start_train_worker(env, tmp_path / "worker.log")
    workers.append(worker)
    app = make_celery(Settings(redis_url=redis_url))
    rows = [record_to_gold(r) for r in synth_records(30, seed=11)]
    with Scraper(port) as scraper:
        result = app.send_task(TRAIN_TASK, args=[{"records": rows, "config": CONFIG}])
        progress = follow(result, timeout_s=240)
    # the metrics port answered all through the run, which held the main thread
    assert scraper.samples and all(s["livez"] == 200 and s["readyz"] == 200
                                   for s in scraper.samples), scraper.samples[:3]
    assert any(s["tiqu_train_running"] == 1 and s['tiqu_train_phase{phase="train"}'] == 1
               and s["tiqu_train_total_steps"] == 3 for s in scraper.samples)
    assert max(s["tiqu_train_step"] for s in scraper.samples if s["tiqu_train_running"]) == 3
    assert result.successful(), f"{result.state}: {result.info}\n{worker.log()[-3000:]}"
    done = result.get()
    run_dir = Path(done.pop("run_dir"))
    assert run_dir == tmp_path / "adapters" / "runs" / result.id  # the worker's default
    manifest = Manifest.load(run_dir)
    assert manifest.model_dump(mode="json") == done and manifest.timings["steps"] == 3
    assert manifest.data["rows"] == 30
    steps = [p for p in progress if p["phase"] == "train"]
    assert steps, f"no PROGRESS state seen: {progress}"
    assert all(p["total"] == 3 and 1 <= p["step"] <= 3 for p in steps)
    assert any(p["phase"] == "eval" for p in progress)
    assert "[tasks]" in worker.log() and TRAIN_TASK in worker.log()
    # bad requests fail the task with the error's type and message; the worker stays up
    missing_path = tmp_path / "train-data" / "missing.jsonl"
    missing = app.send_task(TRAIN_TASK, args=[{"data": str(missing_path)}])
    bad_row = {"text": "张三 断网", "gold": {"name": "李四"}}
    bad = app.send_task(TRAIN_TASK, args=[{"records": [rows[0], bad_row]}])
    for failed in (missing, bad):
        follow(failed, timeout_s=60)
        assert failed.state == "FAILURE"
    assert "PathRefused" in repr(missing.info) and "missing.jsonl" in str(missing.info)
    assert "DataError" in repr(bad.info)
    assert "1 bad row(s): rows 2" in str(bad.info)
    assert "李四" not in str(bad.info) and "李四" not in worker.log()  # no gold values
    assert worker.proc.poll() is None
    after = scrape(port)
    assert after["tiqu_train_running"] == 0
    assert after['tiqu_train_runs_total{state="SUCCESS"}'] == 1
    assert after['tiqu_train_runs_total{state="FAILURE"}'] == 2


def scrape(port: int) -> dict[str, float]:
    """The metrics port's samples (``name{labels}`` -> value) and its probes' statuses."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for path in ("/livez", "/readyz"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                out[path[1:]] = r.status
        except urllib.error.HTTPError as err:
            out[path[1:]] = err.code
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


class Scraper:
    """Scrapes the metrics port every 50 ms from a thread while the block runs."""

    def __init__(self, port: int) -> None:
        self.port, self.samples = port, []  # type: list[dict[str, float]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(scrape(self.port))

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
