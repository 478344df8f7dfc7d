"""Hot swap in real worker processes against real Redis.

1. After a promotion a worker's answers equal those of an Engine built in this
   process with the same adapter; after a rollback, those of the previous one,
   and after rolling back past the first promotion, the base model's.
2. Under continuous load with two workers a promotion mid-stream loses no task,
   and each worker's adapter version never goes down in completion order.
3. An adapter with a bad checksum or another base model is refused, and the
   old adapter keeps serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from core.adapter_stores import BLOB_PREFIX
from core.adapters import Registry, worker_key
from core.names import RESULT_KEY_PREFIX
from core.settings import Settings
from producer import Client
from tests.conftest import ROOT, WorkerProc, start_worker, worker_env
from tests.test_adapters import make_adapter

# One short text keeps the test quick; the test checks first that the two
# adapters answer it differently.
TEXTS = ["王五，广州市天河区体育西路1号，快递丢件，要求赔偿。"]


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "v1": make_adapter(tiny_model, root / "v1", "v1", seed=1),
        "v2": make_adapter(tiny_model, root / "v2", "v2", seed=2),
        "badbase": make_adapter(tiny_model, root / "bb", "badbase", seed=3,
                                base_hash="0" * 16),
    }


def shared_settings(tmp_path: Path, **kw: Any) -> Settings:
    """The test's view of the cluster: its own cache, the shared adapter folder."""
    return Settings(cache_dir=tmp_path / "publisher", adapter_dir=tmp_path / "shared", **kw)


def env_for(redis_url: str, model: Path, tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    """A worker with its own cache, the shared adapter folder and one torch thread
    (two threads per worker on a busy 2-core machine were 4x slower)."""
    return worker_env(redis_url, model, TIQU_CACHE_DIR=str(tmp_path / f"cache-{name}"),
                      TIQU_ADAPTER_DIR=str(tmp_path / "shared"), OMP_NUM_THREADS="1", **extra)


def direct_outputs(model: Path, adapter: Path | None) -> list[dict[str, Any] | None]:
    """What a fresh Engine in this process answers, one text per batch, float32 and
    one thread, exactly as the worker computes it."""
    import torch

    from inference.engine import Engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = Engine(Settings(base_model=str(model), dtype="float32"))
        if adapter is not None:
            engine.load_adapter(str(adapter / "adapter"), version="direct")
        outs = [engine.extract_batch([t])[0] for t in TEXTS]
    finally:
        torch.set_num_threads(threads)
    return [o.complaint.model_dump() if o.complaint else None for o in outs]


def ask(client: Client, texts: list[str], timeout_s: float = 120) -> list[dict[str, Any]]:
    sent = client.submit_many([(f"t{i}", t) for i, t in enumerate(texts)])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=timeout_s))
    return [got[i] for i in range(len(texts))]


def cli(redis_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tiqu adapters ...`` as an operator runs it, in its own process."""
    env = {**worker_env(redis_url, Path(".")), "TIQU_CACHE_DIR": str(tmp_path / "publisher"),
           "TIQU_ADAPTER_DIR": str(tmp_path / "shared")}
    return subprocess.run([sys.executable, "-m", "tiqu", "--redis-url", redis_url, "adapters",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def cli_here(redis_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``tiqu adapters ...`` in this process (same code, without the start-up cost)."""
    from tiqu.cli import main

    code = main(["--redis-url", redis_url, "adapters", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_swap_outputs_match_direct_engine_and_rollback(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, adapters: dict[str, Path],
    tmp_path: Path, workers: list[WorkerProc], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIQU_CACHE_DIR", str(tmp_path / "publisher"))
    monkeypatch.setenv("TIQU_ADAPTER_DIR", str(tmp_path / "shared"))
    expected = {name: direct_outputs(tiny_model, adapters.get(name))
                for name in ("base", "v1", "v2")}
    # The adapters really change the answers, so matching them below means something.
    assert expected["v1"] != expected["v2"] and expected["v1"] != expected["base"]

    reg = Registry(redis_db, shared_settings(tmp_path))
    reg.publish(adapters["v1"])
    reg.publish(adapters["v2"])
    w = start_worker("swap", env_for(redis_url, tiny_model, tmp_path, "swap",
                                     TIQU_DTYPE="float32", TIQU_BATCH_SIZE="1"),
                     tmp_path / "w.log")
    workers.append(w)
    client = Client(redis_db)

    def served(want: str | None) -> None:
        envs = ask(client, TEXTS)
        assert [e["adapter_version"] for e in envs] == [want] * len(TEXTS)
        assert [e["result"] for e in envs] == expected[want or "base"], want

    served(None)  # no active key: the worker serves what it started with
    proc = cli(redis_url, tmp_path, "promote", "v1", "--reason", "first", "--timeout-s", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{w.name}: serving v1" in proc.stdout  # the idle worker swapped at once
    served("v1")
    for action, want in ((("promote", "v2"), "v2"), (("rollback",), "v1"),
                         (("rollback",), None)):
        code, out = cli_here(redis_url, capsys, *action, "--timeout-s", "10")
        assert code == 0 and f"{w.name}: serving {want or 'none'}" in out, out
        served(want)

    state = redis_db.hgetall(worker_key(w.name))
    assert state[b"serving"] == b"none" and state[b"swaps"] == b"4"
    assert state[b"last_error"] == b""
    assert [h.to_version for h in reg.history()] == ["v1", "v2", "v1", "none"]


def read_results(pubsub: Any, ours: set[bytes], seen: list[dict[str, Any]]) -> None:
    """Append our envelopes in the order workers published them (completion order).

    Pub/sub channels are shared by every Redis database, so only our keys count.
    """
    msg = pubsub.get_message(timeout=0.5)
    while msg:
        if msg["type"] == "pmessage" and msg["channel"] in ours:
            seen.append(json.loads(msg["data"])["result"])
        msg = pubsub.get_message(timeout=0)


def test_promotion_under_load_loses_nothing_and_never_goes_back(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, adapters: dict[str, Path],
    tmp_path: Path, workers: list[WorkerProc],
) -> None:
    reg = Registry(redis_db, shared_settings(tmp_path, adapter_store="redis"))
    reg.publish(adapters["v1"])
    reg.publish(adapters["v2"])
    reg.promote("v1")
    with ThreadPoolExecutor(2) as pool:  # start both at once: start-up is mostly imports
        starts = [pool.submit(start_worker, name, env_for(redis_url, tiny_model, tmp_path, name,
                                                          TIQU_BATCH_SIZE="16"),
                              tmp_path / f"{name}.log") for name in ("la", "lb")]
    workers.extend(f.result() for f in starts if f.exception() is None)
    for f in starts:
        f.result()
    pubsub = redis_db.pubsub()
    pubsub.psubscribe(RESULT_KEY_PREFIX + "*")
    n = 300
    sent = Client(redis_db).submit_many(
        [(f"c{i}", f"张{i} a{i}@b.cn 断网{i}") for i in range(n)])
    ours = {(RESULT_KEY_PREFIX + s.task_id).encode() for s in sent}
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    promoted_at = None
    while len(seen) < n and time.monotonic() < deadline:
        read_results(pubsub, ours, seen)
        if promoted_at is None and len(seen) >= 60 and len({e["worker"] for e in seen}) == 2:
            reg.promote("v2", reason="mid-stream")
            promoted_at = len(seen)
    pubsub.close()

    assert promoted_at is not None and promoted_at < n - 100, promoted_at
    assert len(seen) == n, f"{len(seen)} of {n} answered"
    assert sorted(e["id"] for e in seen) == sorted(s.id for s in sent)  # each exactly once
    assert [e for e in seen if e["status"] != "ok"] == []
    rank = {"v1": 0, "v2": 1}
    for w in workers:
        versions = [rank[e["adapter_version"]] for e in seen if e["worker"] == w.name]
        assert versions == sorted(versions), f"{w.name} went back to an older adapter"
        assert set(versions) == {0, 1}, f"{w.name} served {set(versions)}"


def test_corrupt_or_foreign_adapter_is_refused_and_old_one_serves(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, adapters: dict[str, Path],
    tmp_path: Path, workers: list[WorkerProc],
) -> None:
    from inference.models import model_fingerprint
    from tiqu.adapters_cli import broadcast_swap

    settings = shared_settings(tmp_path, redis_url=redis_url)
    reg = Registry(redis_db, settings)
    reg.publish(adapters["v1"])
    reg.publish(adapters["badbase"])
    Registry(redis_db, shared_settings(tmp_path, adapter_store="redis")).publish(
        adapters["v2"], version="badsum")
    redis_db.setrange(BLOB_PREFIX + "badsum:adapter_model.safetensors:0", 100, b"\xff\xfe")
    reg.promote("v1")
    w = start_worker("bad", env_for(redis_url, tiny_model, tmp_path, "bad"), tmp_path / "w.log")
    workers.append(w)
    client = Client(redis_db)

    reg.promote("badbase")
    [reply] = broadcast_swap(settings, timeout_s=10)
    ours = model_fingerprint(str(tiny_model))
    assert reply["serving"] == "v1" and reply["refused"] == "badbase"
    assert (f"adapter base model hash '{'0' * 16}' != worker base model hash '{ours}'"
            in reply["last_error"])
    attempts = w.log().count("adapter badbase refused")
    for _ in range(2):  # separate batches: the refused version is not tried again
        envs = ask(client, TEXTS)
        assert [(e["status"], e["adapter_version"]) for e in envs] == [("ok", "v1")]
    assert w.log().count("adapter badbase refused") == attempts

    reg.promote("badsum")
    envs = ask(client, TEXTS)
    assert [e["adapter_version"] for e in envs] == ["v1"]
    state = {k.decode(): v.decode() for k, v in redis_db.hgetall(worker_key(w.name)).items()}
    assert state["serving"] == "v1" and state["refused"] == "badsum"
    assert "'adapter_model.safetensors' sha256" in state["last_error"]
    assert "badsum" not in [p.name for p in (tmp_path / "cache-bad" / "adapter-cache").iterdir()]


def test_a_worker_killed_in_a_swap_dies_after_the_fetch_and_before_serving(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, adapters: dict[str, Path],
    tmp_path: Path, workers: list[WorkerProc],
) -> None:
    """The ``in_swap`` kill point sits between the verified fetch and the load."""
    reg = Registry(redis_db, shared_settings(tmp_path))
    reg.publish(adapters["v1"])
    w = start_worker("inswap", env_for(redis_url, tiny_model, tmp_path, "inswap",
                                       TIQU_FAULT_POINT="in_swap"), tmp_path / "w.log")
    workers.append(w)
    envs = ask(Client(redis_db), TEXTS)
    assert [e["adapter_version"] for e in envs] == [None]  # no active key: base model
    reg.promote("v1")
    Client(redis_db).submit_many([("after", TEXTS[0])])  # the next batch swaps first
    assert w.proc.wait(60) == -9
    cached = tmp_path / "cache-inswap" / "adapter-cache"
    assert sorted(p.name for p in cached.iterdir()) == ["v1"]  # fetched whole, no temp folder
    assert "adapter swapped" not in w.log()
