"""``tiqu flower``: loopback by default, auth required elsewhere, and Flower's
HTTP API sends ``tiqu.extract`` to a real worker and reads the answer back."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.errors import ConfigError
from core.settings import Settings
from producer import Client
from tests.conftest import ROOT, start_worker, worker_env
from tests.test_metrics import free_port
from tiqu.cli import main as tiqu_main
from tiqu.flower import flower_command, is_loopback

USER, PASSWORD = "ops", "s3cret-pw"
TEXT = "张三 北京市朝阳区建国路88号 zhangsan@example.com 宽带断网三天了。"


def _args(**kw: Any) -> argparse.Namespace:
    base = {"port": 5555, "address": "127.0.0.1", "basic_auth": None, "url_prefix": None}
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("address", ["0.0.0.0", "", "10.1.2.3", "::", "flower.example.com"])
def test_refuses_non_loopback_without_auth(
    address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIQU_FLOWER_BASIC_AUTH", raising=False)
    assert tiqu_main(["flower", "--address", address]) == 2
    assert "basic auth is not set" in capsys.readouterr().err


def test_auth_checks_and_where_credentials_go() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    with pytest.raises(ConfigError, match="entry 2 must be user:password"):
        flower_command(_args(address="0.0.0.0", basic_auth="a:b,nopassword"), Settings())
    argv, env = flower_command(_args(address="0.0.0.0"),
                               Settings(flower_basic_auth=f"{USER}:{PASSWORD}"))
    assert env["FLOWER_BASIC_AUTH"] == f"{USER}:{PASSWORD}"
    assert not any(PASSWORD in a for a in argv)  # argv is visible in ps
    assert "--address=0.0.0.0" in argv
    argv, env = flower_command(_args(), Settings())  # loopback: no auth needed
    assert "FLOWER_BASIC_AUTH" not in env and "--address=127.0.0.1" in argv


def _request(url: str, auth: bool = True, body: dict[str, Any] | None = None
             ) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in kind else raw
    except urllib.error.HTTPError as err:
        return err.code, None


@pytest.fixture()
def flower(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """``tiqu flower`` with basic auth on a free loopback port; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIQU_", "FLOWER_"))}
    env.update({"PYTHONPATH": str(ROOT), "TIQU_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"})
    log = open(tmp_path / "flower.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiqu", "--redis-url", redis_url, "flower", "--port", str(port)],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (401 without credentials)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"flower did not answer at {url} in {timeout_s} s")


def _poll_result(url: str, timeout_s: float) -> dict[str, Any]:
    """GET the result until its state is SUCCESS, as an HTTP-only client would.

    (Flower's ``?timeout=`` waits for the result but reports the state it read
    before waiting, so polling without it is the reliable form.)
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = _request(url)
        assert code == 200, body
        if body["state"] == "SUCCESS":
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"no result at {url} in {timeout_s} s")


def test_flower_auth_workers_and_http_send_task(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list,
    flower: str,
) -> None:
    # Flower boots while the worker loads its model.
    w = start_worker("web", worker_env(redis_url, tiny_model), tmp_path / "w.log")
    workers.append(w)
    _wait_up(flower)
    assert _request(f"{flower}/", auth=False)[0] == 401
    assert _request(f"{flower}/api/workers", auth=False)[0] == 401
    assert _request(f"{flower}/healthcheck", auth=False)[0] == 200  # for probes
    assert _request(f"{flower}/", auth=True)[0] == 200

    body = {"kwargs": {"text": TEXT, "id": "http-1"},
            "kwargsrepr": "{'text': '<redacted>', 'id': 'http-1'}"}
    # Routed to a queue nobody consumes, to read the raw message: no text in headers.
    code, _ = _request(f"{flower}/api/task/send-task/tiqu.extract",
                       body={**body, "queue": "held"})
    assert code == 200
    message = json.loads(redis_db.lindex("held", 0))
    assert message["headers"]["task"] == "tiqu.extract"
    assert TEXT not in json.dumps(message["headers"], ensure_ascii=False)

    code, sent = _request(f"{flower}/api/task/send-task/tiqu.extract", body=body)
    assert code == 200, sent
    task_id = sent["task-id"]
    result = _poll_result(f"{flower}/api/task/result/{task_id}", timeout_s=60)
    assert result["result"]["id"] == "http-1" and result["result"]["worker"] == w.name
    assert result["result"]["status"] in ("ok", "error") and "grounded" in result["result"]
    assert Client(redis_db).poll([task_id]) == [result["result"]]

    code, listed = _request(f"{flower}/api/workers?refresh=1")
    assert code == 200 and w.name in listed, listed
