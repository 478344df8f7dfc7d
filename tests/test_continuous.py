"""Continuous batching and jump-forward (inference.continuous) against static batching.

Each test runs the same texts through the static scheduler (one ``generate`` per
batch) and the continuous one on tiny random models, in float32, with random LoRA
weights on every linear layer, and compares the answers token for token: the
complaint, the number of new tokens and each field's confidence.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from core.names import result_key
from core.settings import Settings
from inference.engine import Engine, Outcome


def _texts(n: int, seed: int = 0) -> list[str]:
    """Texts of very different lengths, so answers end at very different steps."""
    rng = random.Random(seed)
    parts = ["宽带断网，客服不回。", "张三 北京市朝阳区建国路88号 zhangsan@example.com ",
             'The package "never" arrived. ', "物业费年年涨，电梯坏了。", "订单号 123456 "]
    return [f"投诉{i}：" + "".join(rng.choice(parts) for _ in range(rng.randint(0, 7)))
            for i in range(n)]


def _key(o: Outcome) -> tuple[Any, ...]:
    conf = {f: round(t.confidence, 5) for f, t in (o.traces or {}).items()}
    spans = {f: t.span for f, t in (o.traces or {}).items()}
    return (o.complaint, o.error and str(o.error), o.new_tokens, conf, spans)


@pytest.fixture(scope="module", params=["bpe", "sp", "qwen3"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (two tokenizer families, and Qwen3's architecture and template)
    with a random LoRA adapter saved beside it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.tiny import build_model

    root = tmp_path_factory.mktemp(request.param)
    kind, arch = ("bpe", "qwen3") if request.param == "qwen3" else (request.param, "llama")
    model_dir = build_model(root / "model", kind, seed=1, arch=arch)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(root / "adapter")
    return root


def _engine(folder: Path, **kw: Any) -> Engine:
    return Engine(Settings(base_model=str(folder / "model"), device="cpu", dtype="float32",
                           adapter=str(folder / "adapter"), **kw))


def test_continuous_gives_the_static_answers_in_any_arrival_order(folder: Path) -> None:
    texts = _texts(11)
    static = _engine(folder, scheduler="static").extract_batch(texts)
    assert all(o.complaint is not None for o in static)
    engine = _engine(folder, batch_size=3)  # rows leave and join all the time
    assert engine.continuous()
    for seed in (0, 1):
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        got = engine.extract_batch([texts[i] for i in order])
        assert [_key(got[order.index(i)]) for i in range(len(texts))] == [
            _key(o) for o in static]
    stats = engine.stats.extra["continuous"]
    assert stats["tokens"] == sum(o.new_tokens for o in static)
    assert stats["row_steps"] < stats["static_row_steps"]


def test_jump_forward_changes_no_token(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced runs fed in one pass give the step-by-step answers; a pass cost as a
    GPU's makes every forced run jump."""
    from inference import continuous

    texts = _texts(8, seed=2)
    stepwise = _engine(folder, jump_forward=False)
    base = stepwise.extract_batch(texts)
    assert stepwise.stats.extra["continuous"]["jumped"] == 0
    monkeypatch.setattr(continuous, "CPU_STEP_COST_TOKENS", 1e6)
    jumping = _engine(folder)
    got = jumping.extract_batch(texts)
    assert [_key(o) for o in got] == [_key(o) for o in base]
    stats = jumping.stats.extra["continuous"]
    assert stats["forced"] > 0 and stats["jumped"] > 0
    assert stats["decode_passes"] < stepwise.stats.extra["continuous"]["decode_passes"]


def test_rows_that_finish_early_are_reported_before_the_batch_ends(folder: Path) -> None:
    texts = ["短"] + [t + "宽带断网，客服不回。" * 6 for t in _texts(3, seed=5)]
    engine = _engine(folder, batch_size=4)
    seen: list[int] = []
    running_at: dict[int, int] = {}

    def on_done(i: int, out: Outcome) -> None:
        running_at[i] = len(texts) - len(seen) - 1  # rows still running after this one
        seen.append(i)

    got = engine.extract_continuous(texts, on_done=on_done)
    assert sorted(seen) == list(range(len(texts)))
    first = seen[0]
    assert got[first].new_tokens < max(o.new_tokens for o in got)
    assert running_at[first] == len(texts) - 1  # stored while all the others still decode


def test_a_request_arriving_mid_decode_is_answered(folder: Path) -> None:
    texts = _texts(4, seed=7)
    late = "迟到的投诉：宽带断网，客服不回。订单号 123456"
    static = _engine(folder, scheduler="static").extract_batch(texts + [late])
    engine = _engine(folder, batch_size=2)
    calls = {"n": 0}
    done: list[int] = []

    def source() -> list[str]:
        calls["n"] += 1
        return [late] if calls["n"] == 2 else []  # after a pass with a free row

    got = engine.extract_continuous(texts, on_done=lambda i, o: done.append(i), source=source)
    assert len(got) == 5 and 4 in done
    assert done.index(4) > 0  # it joined a running set
    assert [_key(o) for o in got] == [_key(o) for o in static]


def test_arrivals_are_asked_for_only_when_a_row_is_free(folder: Path) -> None:
    """``extract_batch`` with a source: texts join as rows free up, never while every
    row is busy or texts still wait, and their outcomes follow in arrival order."""
    texts = _texts(4, seed=7)
    late = ["迟到的投诉：宽带断网，客服不回。订单号 123456", "李四，燃气表不走字，请派人查看。"]
    static = _engine(folder, scheduler="static").extract_batch(texts + late)
    engine = _engine(folder, batch_size=2)
    done: list[int] = []
    asked: list[int] = []  # answers done when the source was asked

    def source() -> list[str]:
        asked.append(len(done))
        return [late[len(asked) - 1]] if len(asked) <= len(late) else []

    got = engine.extract_batch(texts, on_done=lambda i, o: done.append(i), source=source)
    assert len(got) == 6 and sorted(done) == list(range(6))
    # 4 texts on 2 rows: the first ask comes after 3 answers (2 rows free up for the
    # 2 waiting texts, then one more), not before
    assert asked[0] >= 3, asked
    assert [_key(o) for o in got] == [_key(o) for o in static]


def test_out_of_memory_splits_the_run_and_answers_every_text(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass over more than two rows runs out of memory: the engine halves the texts
    until it fits, and every text still gets the answer it gets alone."""
    texts = _texts(5, seed=9)
    alone = [_key(_engine(folder, scheduler="static").extract_batch([t])[0]) for t in texts]
    engine = _engine(folder)
    real = engine.model.forward
    sizes: list[int] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        sizes.append(int(kwargs["input_ids"].shape[0]))
        if sizes[-1] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", forward)
    got = engine.extract_batch(texts)
    assert [_key(o) for o in got] == alone
    assert engine.stats.splits >= 2 and max(sizes) > 2


def test_a_worker_stores_a_short_answer_while_its_batch_still_decodes(
        redis_db: Any, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list) -> None:
    """One batch of a short and a long complaint through a real worker whose every
    forward pass takes 30 ms longer: the short answer is stored (and its message
    acknowledged) while the long one is still being decoded."""
    from producer import Client
    from tests.conftest import start_worker, worker_env

    env = worker_env(redis_url, tiny_model, TIQU_BATCH_SIZE="2", TIQU_FLUSH_INTERVAL_S="30",
                     TIQU_DTYPE="float32", TIQU_FAULT_POINT="slow_pass")
    workers.append(start_worker("early", env, tmp_path / "w.log"))
    client = Client(redis_db)
    long_text = "投诉：" + "宽带断网三天了，客服电话一直打不通，" * 12 + "请尽快处理。"
    short, long_ = client.submit_many([("short", "短"), ("long", long_text)])
    seen: dict[str, float] = {}
    logged_when_stored: dict[str, bool] = {}
    deadline = time.monotonic() + 120
    while len(seen) < 2 and time.monotonic() < deadline:
        for name, sent in (("short", short), ("long", long_)):
            if name not in seen and redis_db.exists(result_key(sent.task_id)):
                seen[name] = time.monotonic()
                logged_when_stored[name] = f"task {sent.task_id} " in workers[0].log()
        time.sleep(0.01)
    assert set(seen) == {"short", "long"}, (workers[0].log()[-2000:])
    assert seen["long"] - seen["short"] > 0.15  # five slow passes or more after it
    got = dict(client.collect([short.task_id, long_.task_id], timeout_s=10))
    assert got[0]["status"] == "ok" and got[1]["status"] == "ok"
    assert got[0]["latency_ms"] < got[1]["latency_ms"]
    # Each task's execution line (what tiqu soak counts) is written before its result
    # is stored, the early one included, and once.
    assert logged_when_stored == {"short": True, "long": True}
    for sent in (short, long_):
        assert workers[0].log().count(f"task {sent.task_id} ") == 1
    deadline = time.monotonic() + 10
    while redis_db.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_db.llen("extract") == 0 and not redis_db.hlen("unacked")


@pytest.mark.parametrize("join_s", ["30", "0"])
def test_a_task_arriving_while_a_batch_decodes_joins_it(
        redis_db: Any, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list,
        join_s: str) -> None:
    """A long complaint's batch is decoding (every forward pass 30 ms slower) when a
    short one arrives. With joining on, the short one takes the batch's free row: one
    batch answers both. With ``TIQU_JOIN_S=0`` it waits for a batch of its own."""
    from producer import Client
    from tests.conftest import start_worker, worker_env
    from tests.test_metrics import free_port
    from tests.test_train_task import scrape

    port = free_port()
    env = worker_env(redis_url, tiny_model, TIQU_BATCH_SIZE="2", TIQU_DTYPE="float32",
                     TIQU_FAULT_POINT="slow_pass", TIQU_JOIN_S=join_s,
                     TIQU_METRICS_PORT=str(port))
    workers.append(start_worker(f"join{join_s}", env, tmp_path / "w.log"))
    client = Client(redis_db)
    long_text = "投诉：" + "宽带断网三天了，客服电话一直打不通，" * 12 + "请尽快处理。"
    (long_,) = client.submit_many([("long", long_text)])
    deadline = time.monotonic() + 30
    while redis_db.llen("extract") and time.monotonic() < deadline:  # taken: it decodes
        time.sleep(0.01)
    time.sleep(0.2)
    assert not redis_db.exists(result_key(long_.task_id)), "the long answer came too soon"
    (short,) = client.submit_many([("short", "短")])
    got = dict(client.collect([short.task_id, long_.task_id], timeout_s=120))
    assert got[0]["status"] == "ok" and got[1]["status"] == "ok", workers[0].log()[-2000:]
    deadline = time.monotonic() + 10
    while redis_db.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_db.llen("extract") == 0 and not redis_db.hlen("unacked")
    batches = scrape(port)
    assert batches["tiqu_batch_size_sum"] == 2  # two tasks answered
    assert batches["tiqu_batch_size_count"] == (1 if join_s == "30" else 2)
