"""Corrections: checks, the stream, ``tiqu.correct`` on a real train worker, the export."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from core import corrections
from core.errors import InvalidInput
from core.names import (
    CORRECT_TASK,
    CORRECTIONS_KEY,
    REVIEW_AT_KEY,
    REVIEW_KEY,
    REVIEW_TEXT_PREFIX,
    TRAIN_QUEUE,
)
from core.queue import make_celery
from core.settings import Settings
from tests.conftest import start_worker, worker_env
from tests.test_train_task import start_train_worker
from tiqu.cli import main as tiqu_main
from trainer.data import parse_row
from workers.batching import flag_for_review

TEXT = "您好，我叫王小明，住在北京市朝阳区建国路88号，邮箱 wxm@example.com。快递丢了怎么办？"
GOLD = {"name": "王小明", "address": "北京市朝阳区建国路88号", "email": "wxm@example.com",
        "question": "快递丢了怎么办？"}


def _code(payload: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        corrections.check(payload, "task", 8000)
    return info.value.code


def test_check_codes_and_spans() -> None:
    c = corrections.check({"id": "c1", "text": TEXT, "gold": GOLD}, "task", 8000)
    assert {k: TEXT[s[0]:s[1]] for k, s in c.spans.items() if s} == GOLD
    assert _code({"text": TEXT, "gold": GOLD}) == "missing_id"
    assert _code({"id": "c1", "text": TEXT, "gold": {"name": "王小明"}}) == "invalid_gold"
    assert _code({"id": "c1", "text": TEXT, "gold": {**GOLD, "name": 3}}) == "invalid_gold"
    assert _code({"id": "c1", "text": TEXT, "gold": {**GOLD, "name": " "}}) == "invalid_gold"
    assert _code({"id": "c1", "text": TEXT, "gold": [GOLD]}) == "invalid_gold"
    assert _code({"id": "c1", "text": TEXT, "gold": {**GOLD, "name": "李四"}}) == "ungrounded_gold"
    assert _code({"id": "c1", "text": "", "gold": GOLD}) == "empty_text"
    with pytest.raises(InvalidInput) as info:
        corrections.check({"id": "c1", "text": TEXT, "gold": {**GOLD, "name": "李四"}}, "task",
                          8000)
    assert "李四" not in str(info.value)  # messages name fields, never values
    with pytest.raises(InvalidInput, match="span of 'name'") as info:
        corrections.check({"id": "c1", "text": TEXT, "gold": GOLD}, "page", 8000,
                          spans={"name": [0, 3]})
    assert info.value.code == "invalid_spans"


def test_store_keeps_the_latest_per_id_and_text(redis_db: redis.Redis) -> None:
    first = corrections.check({"id": "c1", "text": TEXT, "gold": GOLD}, "task", 8000)
    second = corrections.check({"id": "c1", "text": TEXT, "gold": {**GOLD, "email": None}},
                               "page", 8000, adapter_version="v3")
    other = corrections.check({"id": "c2", "text": TEXT, "gold": GOLD}, "task", 8000)
    for c in (first, second, other):
        corrections.store(redis_db, c)
    assert redis_db.xlen(CORRECTIONS_KEY) == 3  # every entry is kept
    assert redis_db.ttl(CORRECTIONS_KEY) == -1  # labelled data: no TTL
    assert corrections.count(redis_db) == 2
    loaded = corrections.load(redis_db, batch=2)
    assert [(c.id, c.gold["email"]) for c in loaded] == [("c1", None), ("c2", GOLD["email"])]
    assert loaded[0] == second
    assert corrections.progress(redis_db) == {
        "stored": 2, "retrain_after": corrections.RETRAIN_AFTER,
        "needed": corrections.RETRAIN_AFTER - 2}


def test_flag_for_review_stores_flagged_texts_only_with_the_result_ttl(
    redis_db: redis.Redis,
) -> None:
    flagged = {"status": "ok", "review": ["name"], "confidence": {"name": 0.4}}
    fine = {"status": "ok", "review": [], "confidence": {"name": 0.99}}
    flag_for_review(redis_db, [("t1", flagged), ("t2", fine)], ttl_s=100,
                    texts={"t1": TEXT, "t2": "another text"})
    assert redis_db.get(REVIEW_TEXT_PREFIX + "t1").decode() == TEXT
    assert 0 < redis_db.ttl(REVIEW_TEXT_PREFIX + "t1") <= 100
    assert not redis_db.exists(REVIEW_TEXT_PREFIX + "t2")
    assert redis_db.zrange(REVIEW_KEY, 0, -1) == [b"t1"]
    assert redis_db.zrange(REVIEW_AT_KEY, 0, -1) == [b"t1"]


def test_correct_task_on_a_real_train_worker_then_export(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = worker_env(redis_url, tmp_path / "no-model", OMP_NUM_THREADS="1")
    workers.append(start_train_worker(env, tmp_path / "trainer.log"))
    app = make_celery(Settings(redis_url=redis_url))
    assert app.conf.task_routes[CORRECT_TASK] == {"queue": TRAIN_QUEUE}
    payloads = {
        "good": {"id": "c1", "text": TEXT, "gold": GOLD},
        "invalid_gold": {"id": "c2", "text": TEXT, "gold": {"name": "王小明"}},
        "ungrounded_gold": {"id": "c3", "text": TEXT, "gold": {**GOLD, "name": "李四"}},
        "missing_id": {"text": TEXT, "gold": GOLD},
    }
    sent = {k: app.send_task(CORRECT_TASK, args=[p]) for k, p in payloads.items()}
    deadline = time.monotonic() + 120
    results = {}
    for k, r in sent.items():
        results[k] = r.get(timeout=max(1.0, deadline - time.monotonic()))
    good = results.pop("good")
    assert good["status"] == "ok" and good["id"] == "c1" and good["result"] == GOLD
    assert {k: TEXT[s[0]:s[1]] for k, s in good["spans"].items()} == GOLD
    for code, env_ in results.items():
        assert env_["status"] == "error" and env_["error"]["code"] == code, env_
    assert redis_db.xlen(CORRECTIONS_KEY) == 1
    assert TEXT not in workers[0].log()  # neither the text nor values reach the log

    out = tmp_path / "corrections.jsonl"
    monkeypatch.setenv("TIQU_REDIS_URL", redis_url)
    assert tiqu_main(["data", "corrections", "-o", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600  # personal data: owner only
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["text"], r["gold"]) for r in rows] == [("c1", TEXT, GOLD)]
    record, problems = parse_row(rows[0])
    assert problems == [] and record is not None and record.gold == GOLD


def test_a_live_worker_stores_the_text_of_flagged_tasks_for_review(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    from producer import Client

    env = worker_env(redis_url, tiny_model, TIQU_REVIEW_BELOW="1.01", TIQU_MAX_NEW_TOKENS="48",
                     TIQU_RESULT_TTL_S="600")
    workers.append(start_worker("review-text", env, tmp_path / "w.log"))
    client = Client(redis_db)
    texts = [TEXT, "我叫李娜，邮箱 lina@example.org，发票开错了。"]
    sent = client.submit_many([(f"id-{i}", t) for i, t in enumerate(texts)])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=180))
    for i, s in enumerate(sent):
        assert got[i]["review"], got[i]  # every field is below 1.01
        key = REVIEW_TEXT_PREFIX + s.task_id
        assert redis_db.get(key).decode() == texts[i]
        assert 0 < redis_db.ttl(key) <= 600  # personal data: the results' TTL
