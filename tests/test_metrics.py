"""Worker metrics and ``tiqu status`` against a real worker and real Redis."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from inference.engine import Stats
from producer import Client
from tests.conftest import start_worker, worker_env
from tiqu.cli import main as tiqu_main
from workers.metrics import WorkerMetrics

TEXTS = [
    "张三 北京市朝阳区建国路88号 zhangsan@example.com 宽带断网三天了。",
    "姓名：李四，地址：上海市浦东新区世纪大道100号，邮箱：lisi@test.cn。小区停电没人管！",
    "王五，广州市天河区体育西路1号，快递丢件，要求赔偿。",
    "赵六 杭州市西湖区文三路5号 zl@qq.com 退款一直不到账",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from a worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(samples: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    """Sum of a sample over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def status(redis_url: str, *args: str) -> int:
    return tiqu_main(["--redis-url", redis_url, "status", *args])


def test_metrics_move_and_status_reports_the_worker(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert status(redis_url, "--check", "--timeout-s", "0.5") == 1
    assert "no worker replied" in capsys.readouterr().err
    port = free_port()
    env = worker_env(redis_url, tiny_model, TIQU_METRICS_PORT=str(port))
    w = start_worker("metrics", env, tmp_path / "w.log")
    workers.append(w)
    before = scrape(port)  # served from setup on, before any task
    assert total(before, "tiqu_tasks_total") == 0
    assert ("tiqu_queue_length", (("queue", "extract"),)) in before

    client = Client(redis_db)
    sent = client.submit_many([(f"m{i}", t) for i, t in enumerate(TEXTS)] + [("bad", "")])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=120))
    ok = sum(1 for e in got.values() if e["status"] == "ok")
    grounded = sum(sum(e["grounded"].values()) for e in got.values() if e["grounded"])
    fields = sum(len(e["grounded"]) for e in got.values() if e["grounded"])

    after = scrape(port)
    assert total(after, "tiqu_tasks_total") == 5
    assert total(after, "tiqu_tasks_total", status="error", code="empty_text") == 1
    assert total(after, "tiqu_tasks_total", status="ok", code="none") == ok
    assert total(after, "tiqu_valid_json_total") == ok
    assert total(after, "tiqu_grounded_fields_total") == grounded
    assert total(after, "tiqu_extracted_fields_total") == fields
    assert total(after, "tiqu_batch_size_sum") == 5
    assert total(after, "tiqu_batch_size_count") >= 1
    assert total(after, "tiqu_task_latency_seconds_count") == 5
    assert total(after, "tiqu_generated_tokens_total") > 0
    assert total(after, "tiqu_model_load_seconds") > 0
    assert total(after, "tiqu_adapter_info", version="none") == 1
    assert total(after, "tiqu_last_batch_timestamp_seconds") > time.time() - 300

    capsys.readouterr()
    assert status(redis_url, "--json", "--timeout-s", "1") == 0
    state = json.loads(capsys.readouterr().out)
    info = state["workers"][w.name]
    assert state["redis"]["ok"] and state["redis"]["queues"] == {"extract": 0, "train": 0}
    assert info["model"] == str(tiny_model) and info["model_loaded"] is True
    assert info["gpu"] == "cpu" and info["device"] == "cpu" and info["queues"] == ["extract"]
    assert info["in_flight"] == 0 and info["active"] == 0
    assert info["batches"] >= 1
    # Both read the same engine counter: the metric and the broadcast agree.
    assert info["generated_tokens"] == total(after, "tiqu_generated_tokens_total")

    assert status(redis_url, "--timeout-s", "1") == 0
    text = capsys.readouterr().out
    assert w.name in text and "gpu=cpu" in text and "extract=0" in text
    assert status(redis_url, "--check") == 0
    assert status(redis_url, "--ready", "--worker", w.name) == 0
    assert status(redis_url, "--ready", "--worker", "gone@nowhere", "--timeout-s", "0.5") == 1
    assert "gone@nowhere did not reply" in capsys.readouterr().err


def test_status_reports_redis_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert status(url, "--check") == 1
    assert "is down" in capsys.readouterr().err


def _runtime(tokens: int, version: str | None, load_s: float = 1.5) -> Any:
    engine = SimpleNamespace(stats=Stats(generated_tokens=tokens, model_load_s=load_s),
                             adapter_version=version)
    return SimpleNamespace(_engine=engine)


def test_after_batch_counts_envelopes_tokens_and_adapter_swaps() -> None:
    m = WorkerMetrics()
    ok = {"status": "ok", "result": {"name": "a"}, "grounded": {"name": True, "email": False},
          "error": None, "latency_ms": 1500.0}
    bad = {"status": "error", "result": None, "grounded": None, "latency_ms": 2.0,
           "error": {"code": "invalid_model_output", "message": "x"}}
    m.after_batch(_runtime(40, None), [ok, bad], 1.6)
    m.after_batch(_runtime(100, "v2"), [ok], 0.4)
    value = m.registry.get_sample_value
    assert value("tiqu_tasks_total", {"status": "ok", "code": "none"}) == 2
    assert value("tiqu_tasks_total", {"status": "error", "code": "invalid_model_output"}) == 1
    assert value("tiqu_generated_tokens_total") == 100
    assert value("tiqu_grounded_fields_total", {"field": "name"}) == 2
    assert value("tiqu_grounded_fields_total", {"field": "email"}) is None
    assert value("tiqu_extracted_fields_total", {"field": "email"}) == 2
    assert value("tiqu_valid_json_total") == 2
    assert value("tiqu_batch_size_sum") == 3 and value("tiqu_batch_size_count") == 2
    assert value("tiqu_task_latency_seconds_bucket", {"le": "1.0"}) == 1
    assert value("tiqu_adapter_info", {"version": "v2"}) == 1
    assert value("tiqu_adapter_info", {"version": "none"}) is None
    assert value("tiqu_model_load_seconds") == 1.5
    m.refresh_engine(_runtime(30, "v2"))  # a reloaded engine counts from zero again
    assert value("tiqu_generated_tokens_total") == 130


def test_queue_poll_reads_list_lengths(redis_db: redis.Redis) -> None:
    redis_db.rpush("extract", *[b"x"] * 3)
    redis_db.rpush("train", b"y")
    m = WorkerMetrics()
    m.poll_queues(redis_db)
    assert m.registry.get_sample_value("tiqu_queue_length", {"queue": "extract"}) == 3
    assert m.registry.get_sample_value("tiqu_queue_length", {"queue": "train"}) == 1


def test_readiness_rules_for_extract_and_train_workers() -> None:
    from tiqu.status import mask_url, ready_problems

    loaded = {"queues": ["extract"], "model_loaded": True}
    loading = {"queues": ["extract"], "model_loaded": False}
    trainer = {"queues": ["train"]}  # answers active_queues only: no tiqu_info
    silent = {"queues": ["extract"]}  # serves extract but gave no tiqu_info
    workers = {"gpu0@a": loaded, "gpu1@a": loading, "train@a": trainer, "gpu2@a": silent}
    assert ready_problems(workers, "gpu0@a") == []
    assert ready_problems(workers, "train@a") == []  # its model loads per run
    assert ready_problems(workers, "gpu1@a") == ["worker gpu1@a has no model loaded"]
    assert "did not answer tiqu_info" in ready_problems(workers, "gpu2@a")[0]
    assert ready_problems(workers, "gpu9@a") == ["worker gpu9@a did not reply"]
    host = socket.gethostname()
    assert ready_problems({f"gpu0@{host}": loaded, "gpu1@other": loading}, None) == []
    assert ready_problems({"gpu1@other": loaded}, None) == [f"no worker named *@{host} replied"]
    assert mask_url("rediss://:p%40ss@r:6380/0") == "rediss://:***@r:6380/0"
    assert mask_url("redis://user:pw@r/1") == "redis://user:***@r/1"
    assert mask_url("redis://r:6379/0") == "redis://r:6379/0"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health_turns_red_and_the_breaker_gauge_rises_when_the_breaker_opens() -> None:
    from core.health import start_server
    from workers.breaker import Breaker
    from workers.metrics import health_app

    m = WorkerMetrics()
    runtime = SimpleNamespace(_engine=None, breaker=Breaker(limit=1), after_batch=[])
    m.watch(runtime)
    port = free_port()
    server = start_server(port, "127.0.0.1", health_app(runtime, m.registry))
    try:
        assert _get(port, "/livez")[0] == 200
        assert _get(port, "/readyz")[0] == 503  # no model loaded yet
        runtime._engine = SimpleNamespace(stats=Stats())
        assert _get(port, "/readyz")[0] == 200
        assert total(scrape(port), "tiqu_breaker_open") == 0
        runtime.breaker.failure()
        assert [_get(port, p)[0] for p in ("/livez", "/readyz")] == [503, 503]
        assert "breaker open" in _get(port, "/livez")[1]
        assert total(scrape(port), "tiqu_breaker_open") == 1  # /metrics still answers
    finally:
        server.shutdown()
        server.server_close()
