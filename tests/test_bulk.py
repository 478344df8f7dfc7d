"""Bulk jobs: ordered streaming output, timeouts, resume, enqueue/collect, expiry, formats.

Queue tests use real Redis and real echo workers (tests/conftest.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from core.names import EXTRACT_QUEUE, RESULT_KEY_PREFIX, result_key
from producer.cli import STATE_SUFFIX, JobState, Task, items_hash
from producer.sources import CSV_COLUMNS, OutputFormat, SourceError, read_source
from tests.conftest import ROOT, start_worker, worker_env
from tiqu.cli import main

TEXTS = ["张三 北京市朝阳区建国路88号 宽带断网三天了。", "李四，上海市浦东新区，小区停电没人管！",
         "Bob, 12 Main St, refund please", "王五，广州市天河区，快递丢件，要求赔偿。"]


def _echo_env(redis_url: str) -> dict[str, str]:
    return worker_env(redis_url, Path("unused"), TIQU_ENGINE="echo")


def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def _write_jsonl(path: Path, n: int) -> list[str]:
    ids = [f"b{i}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": x, "text": TEXTS[k % 4] + f" #{k}"},
                                       ensure_ascii=False) + "\n"
                            for k, x in enumerate(ids)), encoding="utf-8")
    return ids


def _tiqu(redis_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tiqu", "--redis-url", redis_url, *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _envs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _task_id(message: bytes | str) -> str:
    return str(json.loads(message)["headers"]["id"])


def _result_ids(db: redis.Redis) -> set[str]:
    return {k.decode()[len(RESULT_KEY_PREFIX):] for k in db.scan_iter(RESULT_KEY_PREFIX + "*")}


def _hold_back(db: redis.Redis, task_ids: set[str]) -> list[Any]:
    """Take the messages of ``task_ids`` off the queue, leaving the rest in order: the
    worker then answers around a gap, as one does when others are slow."""
    queued = db.lrange(EXTRACT_QUEUE, 0, -1)
    held = [m for m in queued if _task_id(m) in task_ids]
    pipe = db.pipeline(transaction=True)
    pipe.delete(EXTRACT_QUEUE)
    pipe.rpush(EXTRACT_QUEUE, *[m for m in queued if _task_id(m) not in task_ids])
    pipe.execute()
    return held


def test_extract_timeout_writes_what_arrived_then_resume_completes(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = _write_jsonl(src, 12)
    state = Path(str(out) + STATE_SUFFIX)
    proc = _tiqu(redis_url, "extract", str(src), "-o", str(out), "--timeout-s", "40")
    _wait_for(lambda: redis_db.llen(EXTRACT_QUEUE) == 12 and state.exists()
              and all(t.sent_at for t in JobState(state).load()[1]), 60, "12 tasks sent")
    _, tasks = JobState(state).load()
    assert [t.id for t in tasks] == ids
    odd = {t.task_id for t in tasks if t.index % 2}
    held = _hold_back(redis_db, odd)
    first = start_worker("bulk1", _echo_env(redis_url), tmp_path / "w1.log")
    workers.append(first)
    _wait_for(lambda: len(_result_ids(redis_db)) == 6, 60, "6 answers")
    first.stop()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "Traceback" not in err
    assert "6 of 12 results missing" in err and "--resume" in err
    envs = _envs(out)
    assert [e["id"] for e in envs] == ids
    assert [e["status"] for e in envs[::2]] == ["ok"] * 6
    assert [e["error"]["code"] for e in envs[1::2]] == ["timeout"] * 6

    # The held tasks were still queued when the worker stopped; a new worker takes them.
    redis_db.rpush(EXTRACT_QUEUE, *held)
    second = start_worker("bulk2", _echo_env(redis_url), tmp_path / "w2.log")
    workers.append(second)
    proc = _tiqu(redis_url, "extract", str(src), "-o", str(out), "--resume", "--timeout-s", "120")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    envs = _envs(out)
    assert [e["id"] for e in envs] == ids and {e["status"] for e in envs} == {"ok"}
    assert [e["result"]["question"] for e in envs] == [t for _, t in read_source(str(src))]
    # Nothing was sent twice: one result per recorded task id, nothing queued, and the
    # second worker received exactly the held tasks.
    assert _result_ids(redis_db) == {t.task_id for t in tasks}
    assert redis_db.llen(EXTRACT_QUEUE) == 0
    second.stop()
    answered = re.findall(r" task ([0-9a-f-]{36}) id=", second.log())
    assert sorted(answered) == sorted(odd)
    assert not state.exists()  # a finished job leaves no state behind


def test_ctrl_c_prints_one_line_and_keeps_the_job(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, 3)
    proc = _tiqu(redis_url, "extract", str(src), "-o", str(out))
    _wait_for(lambda: redis_db.llen(EXTRACT_QUEUE) == 3, 60, "3 tasks sent")
    time.sleep(0.5)  # now waiting for results
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    _, tasks = JobState(Path(str(out) + STATE_SUFFIX)).load()
    queued = {_task_id(m) for m in redis_db.lrange(EXTRACT_QUEUE, 0, -1)}
    assert {t.task_id for t in tasks} == queued


def test_resume_sends_only_what_a_crash_left_unsent(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(src, 4)
    items = list(read_source(str(src)))
    state = JobState(Path(str(out) + STATE_SUFFIX))
    state.create({"input": str(src), "items_sha256": items_hash(items)})
    recorded = [Task(i, items[i][0], f"task-{i}") for i in range(3)]
    state.record(recorded)  # a crash: 3 recorded, only 0-1 surely sent, 3 never recorded
    state.mark_sent(2, time.time())
    assert main(["--redis-url", redis_url, "extract", str(src), "-o", str(out)]) == 1
    assert redis_db.llen(EXTRACT_QUEUE) == 0  # refused: the unfinished job is not resent
    code = main(["--redis-url", redis_url, "extract", str(src), "-o", str(out), "--resume",
                 "--timeout-s", "0.5"])
    assert code == 3
    sent = [_task_id(m) for m in redis_db.lrange(EXTRACT_QUEUE, 0, -1)]
    _, tasks = state.load()
    assert sorted(sent) == sorted(["task-2", tasks[3].task_id])  # same id for the unsure one
    assert [e["error"]["code"] for e in _envs(out)] == ["timeout"] * 4


def test_enqueue_ids_then_collect_jsonl_and_csv(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, workers: list,
    capsys: pytest.CaptureFixture[str]
) -> None:
    workers.append(start_worker("bulkc", _echo_env(redis_url), tmp_path / "w.log"))
    src, ids_file = tmp_path / "in.json", tmp_path / "ids.jsonl"
    rows = [{"id": f"c{i}", "text": t + "\n第二行, \"引号\""} for i, t in enumerate(TEXTS * 2)]
    src.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert main(["--redis-url", redis_url, "enqueue", str(src), "--ids", str(ids_file)]) == 0
    lines = [json.loads(x) for x in ids_file.read_text().splitlines()]
    entries = [x for x in lines if "task_id" in x]
    assert [(x["index"], x["id"]) for x in entries] == [(i, r["id"]) for i, r in enumerate(rows)]
    capsys.readouterr()

    out = tmp_path / "out.jsonl"
    assert main(["--redis-url", redis_url, "collect", str(ids_file), "-o", str(out),
                 "--timeout-s", "60"]) == 0
    envs = _envs(out)
    assert [e["id"] for e in envs] == [r["id"] for r in rows]
    assert [e["result"]["question"] for e in envs] == [r["text"] for r in rows]

    table = tmp_path / "out.csv"
    assert main(["--redis-url", redis_url, "collect", str(ids_file), "-o", str(table),
                 "--format", "csv", "--timeout-s", "60"]) == 0
    raw = table.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel reads the file as UTF-8
    got = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert list(got[0]) == list(CSV_COLUMNS)
    assert [(g["id"], g["status"], g["question"]) for g in got] == [
        (r["id"], "ok", r["text"]) for r in rows]
    assert {g["error_code"] for g in got} == {""}


def _ids_file(path: Path, tasks: list[Task], sent_at: float | None) -> None:
    state = JobState(path)
    state.create({"input": "x"})
    state.record(tasks)
    if sent_at is not None:
        state.mark_sent(len(tasks), sent_at)


def test_expired_rule(
    redis_db: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No result and sent more than result_ttl_s ago -> ``expired``; a stored result is
    still returned however old the job; a recent task without a result times out."""
    monkeypatch.setenv("TIQU_RESULT_TTL_S", "50")
    env = {"id": "a", "status": "ok", "result": {"name": None, "address": None,
                                                 "email": None, "question": "q"}}
    redis_db.set(result_key("t-a"), json.dumps({"status": "SUCCESS", "result": env}))
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    _ids_file(old, [Task(0, "a", "t-a"), Task(1, "b", "t-b")], time.time() - 100)
    _ids_file(new, [Task(0, "c", "t-c")], time.time())
    out = tmp_path / "out.jsonl"
    assert main(["--redis-url", redis_url, "collect", str(old), "-o", str(out),
                 "--timeout-s", "30"]) == 0
    envs = _envs(out)
    assert [e["id"] for e in envs] == ["a", "b"]
    assert envs[0]["status"] == "ok" and envs[1]["error"]["code"] == "expired"
    assert main(["--redis-url", redis_url, "collect", str(new), "-o", str(out),
                 "--timeout-s", "0.5"]) == 3
    assert _envs(out)[0]["error"]["code"] == "timeout"

    # An ids file without sent marks counts as sent when it was last written.
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"index": 0, "id": "d", "task_id": "t-d"}) + "\n")
    os.utime(bare, (time.time() - 100, time.time() - 100))
    assert main(["--redis-url", redis_url, "collect", str(bare), "-o", str(out)]) == 0
    assert _envs(out)[0]["error"]["code"] == "expired"


# --- sources ----------------------------------------------------------------------------


def test_csv_with_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("id,text\nk1,张三 断网\nk2,李四 停电\n".encode("utf-8-sig"))
    assert list(read_source(str(path))) == [("k1", "张三 断网"), ("k2", "李四 停电")]


def test_csv_in_gb18030_detected_or_named(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("text\r\n张三，北京市朝阳区\r\n客服态度差\r\n".encode("gb18030"))
    want = [("1", "张三，北京市朝阳区"), ("2", "客服态度差")]
    assert list(read_source(str(path))) == want
    assert list(read_source(str(path), encoding="gbk")) == want
    with pytest.raises(SourceError, match="utf-8"):
        list(read_source(str(path), encoding="utf-8"))


def test_json_array_of_strings_and_objects(tmp_path: Path) -> None:
    strings, objects = tmp_path / "s.json", tmp_path / "o.json"
    strings.write_text(json.dumps(["甲", "乙"], ensure_ascii=False), encoding="utf-8")
    objects.write_text(json.dumps([{"id": "x", "text": "甲"}, {"text": "乙"}],
                                  ensure_ascii=False), encoding="utf-8")
    assert list(read_source(str(strings))) == [("1", "甲"), ("2", "乙")]
    assert list(read_source(str(objects))) == [("x", "甲"), ("2", "乙")]


def test_xlsx_reads_rows_or_names_the_extra(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.xlsx"
    try:
        import openpyxl
    except ImportError:
        path.write_bytes(b"PK")
        with pytest.raises(SourceError, match=r"pip install 'tiqu\[xlsx\]'"):
            list(read_source(str(path)))
    else:
        book = openpyxl.Workbook()
        sheet = book.active
        for row in [("id", "text"), ("r1", "张三 断网"), (None, None), (7, "李四 停电")]:
            sheet.append(row)
        book.save(path)
        assert list(read_source(str(path))) == [("r1", "张三 断网"), ("7", "李四 停电")]
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # as if the extra were missing
    with pytest.raises(SourceError, match=r"pip install 'tiqu\[xlsx\]'"):
        list(read_source(str(path)))


def test_output_read_back_keeps_final_records_and_drops_a_torn_one(tmp_path: Path) -> None:
    """What --resume keeps: every record but ``timeout`` ones; a half-written last one goes."""
    ok = {"id": "a", "status": "ok", "result": {"name": "张\u2028三", "address": None,
                                                "email": None, "question": "多行\n问题"},
          "spans": {"name": [0, 3]}, "confidence": {"name": 0.5}, "review": ["name"]}
    late = dict(_missing_env("b", "timeout"))
    for name in ("jsonl", "csv"):
        fmt = OutputFormat(name)
        path = tmp_path / f"out.{name}"
        text = fmt.header + fmt.render(ok) + fmt.render(late) + fmt.render(ok)
        path.write_bytes(text.encode(fmt.encoding) + fmt.render(ok)[:9].encode("utf-8"))
        back = fmt.read_back(str(path))
        assert [final for _, final in back] == [True, False, True], name
        assert back[0][0] == fmt.render(ok)


def _missing_env(id_: str, code: str) -> dict[str, Any]:
    return {"id": id_, "status": "error", "result": None,
            "error": {"code": code, "message": "m"}}
