"""Clients in other languages: docs/examples/enqueue.js (Node.js, no npm packages)
sends ``tiqu.extract`` to a real worker and reads the envelope back, and its message
has the shape of producer.protocol's."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from producer.protocol import task_message
from tests.conftest import ROOT, WorkerProc, start_worker, worker_env

EXAMPLE = ROOT / "docs" / "examples" / "enqueue.js"
#: Multi-byte characters, quotes, a backslash and a newline: RESP lengths are bytes.
TEXT = '张三 北京市朝阳区建国路88号 zhangsan@example.com\n他说："宽带断网三天了" \\ 😀'


def node() -> str:
    """The node binary; the test fails (never skips) without it: CI has Node.js."""
    path = shutil.which("node")
    if path is None:
        pytest.fail("node (Node.js >= 18) is not installed; tests/test_clients.py runs "
                    "docs/examples/enqueue.js with it")
    return path


def run_example(redis_url: str, *args: str, timeout_s: float = 120
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node(), str(EXAMPLE), "--redis", redis_url, *args],
                          capture_output=True, text=True, timeout=timeout_s)


def test_node_example_gets_the_envelope_from_a_worker(
    redis_db: redis.Redis, redis_url: str, workers: list[WorkerProc], tmp_path: Path
) -> None:
    env = worker_env(redis_url, Path("unused"), TIQU_ENGINE="echo")
    workers.append(start_worker("node", env, tmp_path / "worker.log"))
    out = run_example(redis_url, "--id", "crm-4711", "--text", TEXT, "--timeout-s", "90")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    envelope = json.loads(line)
    assert envelope["id"] == "crm-4711" and envelope["status"] == "ok"
    assert envelope["result"]["question"] == TEXT  # the echo engine returns the text
    assert envelope["worker"] == "node@tests"
    # One result, nothing left queued or in flight.
    assert len(redis_db.keys("celery-task-meta-*")) == 1
    assert redis_db.llen("extract") == 0
    assert TEXT not in out.stderr


def test_node_example_message_matches_the_python_producer(redis_db: redis.Redis,
                                                          redis_url: str) -> None:
    out = run_example(redis_url, "--id", "a'b", "--text", TEXT, "--timeout-s", "0.2")
    assert out.returncode == 1 and "no result for task" in out.stderr  # no worker running
    assert TEXT not in out.stderr
    (raw,) = redis_db.lrange("extract", 0, -1)
    sent = json.loads(raw)
    task_id = sent["headers"]["id"]
    _, reference = task_message("tiqu.extract", {"text": TEXT, "id": "a'b"}, "extract",
                                task_id=task_id)
    ref = json.loads(reference)
    assert set(sent) == set(ref)
    assert set(sent["headers"]) == set(ref["headers"])
    assert set(sent["properties"]) == set(ref["properties"])
    for key in ("task", "id", "root_id", "retries", "timelimit", "argsrepr", "lang"):
        assert sent["headers"][key] == ref["headers"][key], key
    for key in ("correlation_id", "delivery_info", "body_encoding", "delivery_mode"):
        assert sent["properties"][key] == ref["properties"][key], key
    assert sent["content-type"] == "application/json"
    assert json.loads(base64.b64decode(sent["body"])) == json.loads(base64.b64decode(ref["body"]))
    assert TEXT not in json.dumps(sent["headers"], ensure_ascii=False)  # kwargsrepr redacts


def test_node_example_reports_redis_errors_without_the_password(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:wrong-secret-pw@", 1)
    out = run_example(url, "--text", "x", "--timeout-s", "1", timeout_s=30)
    assert out.returncode == 1
    assert "wrong-secret-pw" not in out.stderr + out.stdout
    assert out.stderr.startswith("enqueue.js: ")


def test_clients_doc_warns_about_the_default_celery_queue_first() -> None:
    text = (ROOT / "docs" / "clients.md").read_text()
    head = text[:1500]
    assert "`celery`" in head and "`extract`" in head and "no tiqu worker" in head
    for needle in ("celery-task-meta-", "LPUSH", '"kwargsrepr"', "TIQU_RESULT_TTL_S",
                   "examples/enqueue.js"):
        assert needle in text, needle
