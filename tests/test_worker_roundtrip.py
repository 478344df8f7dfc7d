"""A real worker process against real Redis: round trips, envelopes, ids, order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from core.names import EXTRACT_TASK
from core.schema import Envelope
from producer import Client
from tests.conftest import ROOT, start_worker, worker_env

TEXTS = [
    "张三 北京市朝阳区建国路88号 zhangsan@example.com 宽带断网三天了。",
    "姓名：李四，地址：上海市浦东新区世纪大道100号，邮箱：lisi@test.cn。小区停电没人管！",
    "王五，广州市天河区体育西路1号，快递丢件，要求赔偿。",
]


def test_round_trip_envelopes_ids_and_task_name(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    w = start_worker("rt", worker_env(redis_url, tiny_model), tmp_path / "w.log")
    workers.append(w)
    client = Client(redis_db)
    sent = client.submit_many([(f"id-{i}", t) for i, t in enumerate(TEXTS)] + [("bad", "")])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=120))
    assert sorted(got) == [0, 1, 2, 3]
    for i, s in enumerate(sent):
        env = Envelope.model_validate(got[i])
        assert env.id == s.id
        assert env.worker == w.name
        assert env.model == str(tiny_model)
        assert env.latency_ms is not None and env.latency_ms >= 0
    assert got[3]["error"]["code"] == "empty_text"
    for i in range(3):  # a random model: valid via constrained decoding, and grounded
        assert got[i]["status"] == "ok", got[i]
        assert all(got[i]["grounded"].values())
    assert "[tasks]" in w.log() and EXTRACT_TASK in w.log()


def test_cli_extract_keeps_input_order(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    workers.append(start_worker("cli", worker_env(redis_url, tiny_model), tmp_path / "w.log"))
    src = tmp_path / "in.jsonl"
    rows = [{"id": f"c{i}", "text": TEXTS[i % 3] + "!" * i} for i in range(10)]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "tiqu", "--redis-url", redis_url, "extract", str(src),
         "-o", str(out), "--timeout-s", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    envs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["id"] for e in envs] == [r["id"] for r in rows]
    assert "10 complaints" in proc.stderr and "ok" in proc.stderr
