"""Offsets, confidence and review flags end to end: the engine and the worker's
envelopes, the calibration map from manifest to envelope, the review set and
metrics, and the risk-coverage and calibration numbers of ``tiqu eval``."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.manifest import CalibrationMap, Manifest
from core.schema import FIELDS, Envelope
from core.settings import Settings
from inference.engine import Engine, Outcome, field_scores
from tests.conftest import start_worker, worker_env
from trainer import calibrate
from workers.batching import REVIEW_AT_KEY, REVIEW_KEY, flag_for_review
from workers.metrics import WorkerMetrics
from workers.runtime import Runtime

TEXTS = [
    "姓名：ＡＢＣ　张三，住址：北京市朝阳区建国路８８号，邮箱：zs@example.com。宽带断了！",
    "李四\r\n上海市浦东新区世纪大道100号\r\nlisi@test.cn\r\n小区停电没人管 😀😀",
    '王五说："快递丢了"，路径 D:\\单据\\1 里有截图。请赔偿。',
    "Bob, 12 Main St, bob@mail.com, refund not received 🙏 after 30 days.",
]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine: one thread is far faster
    settings = Settings(base_model=str(tiny_model), device="cpu", dtype="float32",
                        decoding="copy", max_new_tokens=48, extra_new_tokens=16)
    yield Engine(settings)
    torch.set_num_threads(threads)


def runtime_for(engine: Engine, **settings: Any) -> Runtime:
    rt = Runtime(engine.settings.model_copy(update=settings))
    rt._engine = engine
    return rt


def envelopes(rt: Runtime, texts: list[str] = TEXTS) -> list[dict[str, Any]]:
    return rt.handle([(f"t{i}", {"id": f"c{i}", "text": t}) for i, t in enumerate(texts)])


def check_spans(env: dict[str, Any], text: str) -> None:
    """Every field has a span entry and a confidence; non-null values are their span."""
    assert env["status"] == "ok", env
    assert set(env["spans"]) == set(env["confidence"]) == set(FIELDS)
    for f in FIELDS:
        value, span = env["result"][f], env["spans"][f]
        assert 0.0 <= env["confidence"][f] <= 1.0
        if value is None:
            assert span is None
        else:
            start, end = span
            assert text[start:end] == value


# --- the engine and the runtime ----------------------------------------------------


def test_every_ok_envelope_locates_its_values_and_scores_every_field(engine: Engine) -> None:
    rt = runtime_for(engine)
    first = envelopes(rt)
    for env, text in zip(first, TEXTS, strict=True):
        check_spans(env, text)
        Envelope.model_validate(env)
        assert env["calibrated"] is False
        assert env["review"] == [f for f in FIELDS if env["confidence"][f] < 0.9]
    again = envelopes(rt)
    assert [e["confidence"] for e in again] == [e["confidence"] for e in first]
    assert [e["spans"] for e in again] == [e["spans"] for e in first]


def test_review_follows_the_threshold(engine: Engine) -> None:
    assert all(e["review"] == [] for e in envelopes(runtime_for(engine, review_below=0.0)))
    assert all(e["review"] == list(FIELDS)
               for e in envelopes(runtime_for(engine, review_below=1.01)))


def test_untraced_answers_and_errors_carry_empty_scores(engine: Engine) -> None:
    rt = Runtime(engine.settings.model_copy(update={"review_below": 1.01}), engine_kind="echo")
    out = rt.handle([("t0", {"text": TEXTS[0]}), ("t1", {"text": ""})])
    assert [e["status"] for e in out] == ["ok", "error"]
    for env in out:
        assert (env["spans"], env["confidence"], env["review"], env["calibrated"]) == (
            {}, {}, [], False)
    cal = {"name": CalibrationMap(x=[0.0], y=[0.5])}
    untraced = engine.extract_batch(TEXTS[:1], "copy")[0]
    untraced.traces = None  # as schema or unconstrained decoding leave it
    assert field_scores(untraced, cal, 1.01) == field_scores(Outcome(), cal, 1.01)
    assert field_scores(Outcome(), cal, 1.01).calibrated is False


def test_tracing_leaves_the_extracted_values_unchanged(engine: Engine) -> None:
    traced = engine.extract_batch(TEXTS, "copy")
    decoder = engine._decoder("copy")
    decoder.constraint.trace = False
    try:
        plain = engine.extract_batch(TEXTS, "copy")
    finally:
        decoder.constraint.trace = True
    assert all(o.traces is None for o in plain)
    assert all(o.traces is not None for o in traced)
    assert [o.complaint for o in traced] == [o.complaint for o in plain]
    assert all(o.complaint is not None for o in plain)


def test_a_row_retried_in_copy_mode_gets_the_copy_runs_traces(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine._run_split

    def first_fails(texts: list[str], mode: str, report: Any = None) -> list[Outcome]:
        if mode != "copy":
            from core.errors import InvalidModelOutput

            return [Outcome(error=InvalidModelOutput("bad", raw_len=3)) for _ in texts]
        return real(texts, mode, report)

    monkeypatch.setattr(engine, "_run_split", first_fails)
    out = engine.extract_batch(TEXTS[:2], "none")
    assert all(o.retried and o.traces is not None and o.complaint is not None for o in out)


def _adapter(root: Path, model_dir: Path, calibration: dict[str, CalibrationMap]) -> Path:
    """A run folder: a random LoRA adapter for the tiny model and a manifest."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    lora.save_pretrained(root / "adapter")
    Manifest(version="cal-1", created_at="2026-01-01T00:00:00+00:00", base_model=str(model_dir),
             base_model_hash="0" * 16, calibration=calibration).save(root)
    return root


def test_the_adapters_calibration_map_is_applied_and_goes_with_it(
    engine: Engine, tiny_model: Path, tmp_path: Path
) -> None:
    flat = {f: CalibrationMap(x=[0.0, 1.0], y=[0.25, 0.25]) for f in FIELDS}
    run = _adapter(tmp_path / "run", tiny_model, flat)
    assert Manifest.load(run).calibration == flat  # round trip
    rt = runtime_for(engine)
    try:
        engine.load_adapter(str(run / "adapter"), version="cal-1")
        for env, text in zip(envelopes(rt), TEXTS, strict=True):
            check_spans(env, text)
            assert env["calibrated"] is True and env["adapter_version"] == "cal-1"
            assert env["confidence"] == dict.fromkeys(FIELDS, 0.25)
            assert env["review"] == list(FIELDS)
        explicit = {"name": CalibrationMap(x=[0.0, 1.0], y=[0.5, 0.5])}  # as hot swap passes it
        engine.load_adapter(str(run / "adapter"), version="cal-2", calibration=explicit)
        env = envelopes(rt, TEXTS[:1])[0]
        assert env["calibrated"] is True and env["confidence"]["name"] == 0.5
    finally:
        engine.use_base()
    env = envelopes(rt, TEXTS[:1])[0]
    assert env["calibrated"] is False and env["confidence"]["name"] != 0.5


# --- calibration maps ----------------------------------------------------------------


def test_isotonic_fit_pools_violators_into_known_breakpoints() -> None:
    cmap = calibrate.fit_isotonic([(0.1, False), (0.2, True), (0.3, False), (0.4, True)])
    assert (cmap.x, cmap.y) == ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    assert cmap.apply(0.0) == 0.0 and cmap.apply(0.25) == 0.5
    assert cmap.apply(0.35) == pytest.approx(0.75) and cmap.apply(1.0) == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_a_fitted_map_is_monotone_in_unit_range_and_survives_the_manifest(
    seed: int, tmp_path: Path
) -> None:
    rnd = random.Random(seed)
    n = rnd.choice([1, 5, 50, 2000])
    pairs = [(rnd.random() ** rnd.choice([1, 3]), rnd.random() < 0.7) for _ in range(n)]
    pairs += [(rnd.choice([0.0, 1.0, 0.5]), rnd.random() < 0.5) for _ in range(n // 10)]
    cmap = calibrate.fit_isotonic(pairs)
    assert len(cmap.x) <= 256
    grid = [i / 1000 for i in range(-10, 1011)]
    values = [cmap.apply(x) for x in grid]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    Manifest(version="v", created_at="now", base_model="m", base_model_hash="h",
             calibration={"name": cmap}).save(tmp_path)
    assert Manifest.load(tmp_path).calibration["name"] == cmap


def test_a_broken_map_is_refused_with_every_problem() -> None:
    with pytest.raises(ValueError, match=r"strictly increasing.*non-decreasing|in \[0, 1\]"):
        CalibrationMap(x=[0.5, 0.2, 1.5], y=[0.9, 0.1, 0.2])


# --- review set and metrics -----------------------------------------------------------


def _env(review: list[str], conf: float = 0.5, status: str = "ok") -> dict[str, Any]:
    return {"status": status, "review": review, "confidence": dict.fromkeys(FIELDS, conf)}


def test_flagged_tasks_go_on_the_review_set_and_leave_with_their_results(
    redis_db: redis.Redis,
) -> None:
    flag_for_review(redis_db, [("a", _env(["name"], 0.3)), ("b", _env([])),
                               ("c", _env(["email"], 0.1, "error"))], ttl_s=100, now_s=1000.0)
    assert redis_db.zrange(REVIEW_KEY, 0, -1, withscores=True) == [(b"a", 0.3)]
    assert 0 < redis_db.ttl(REVIEW_KEY) <= 100 and 0 < redis_db.ttl(REVIEW_AT_KEY) <= 100
    flag_for_review(redis_db, [("d", _env(["name", "email"], 0.2))], ttl_s=100, now_s=1101.0)
    assert redis_db.zrange(REVIEW_KEY, 0, -1) == [b"d"]  # a's result has expired
    assert redis_db.zrange(REVIEW_AT_KEY, 0, -1) == [b"d"]


def test_a_review_write_that_fails_never_raises() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    flag_for_review(dead, [("a", _env(["name"]))], ttl_s=10)


def test_metrics_count_review_fields_and_confidence() -> None:
    class Idle:
        _engine = None

    metrics = WorkerMetrics()
    metrics.after_batch(Idle(), [{**_env(["name", "email"], 0.42), "result": {}},
                                 {**_env([], 0.97), "result": {}}], 0.1)
    sample = metrics.registry.get_sample_value
    assert sample("tiqu_review_fields_total", {"field": "name"}) == 1
    assert sample("tiqu_review_fields_total", {"field": "question"}) is None
    assert sample("tiqu_field_confidence_count", {"field": "question"}) == 2
    assert sample("tiqu_field_confidence_bucket", {"field": "name", "le": "0.5"}) == 1


def test_a_live_worker_answers_with_spans_and_flags_for_review(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, tmp_path: Path, workers: list
) -> None:
    from producer import Client

    env = worker_env(redis_url, tiny_model, TIQU_REVIEW_BELOW="1.01", TIQU_MAX_NEW_TOKENS="48")
    workers.append(start_worker("conf", env, tmp_path / "w.log"))
    client = Client(redis_db)
    sent = client.submit_many([(f"id-{i}", t) for i, t in enumerate(TEXTS)])
    got = dict(client.collect([s.task_id for s in sent], timeout_s=180))
    flagged = dict(redis_db.zrange(REVIEW_KEY, 0, -1, withscores=True))
    for i, s in enumerate(sent):
        check_spans(got[i], TEXTS[i])
        assert got[i]["review"] == list(FIELDS)
        assert flagged[s.task_id.encode()] == pytest.approx(min(got[i]["confidence"].values()))
    assert redis_db.ttl(REVIEW_KEY) > 0


# --- risk-coverage and calibration numbers ----------------------------------------------

KNOWN = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, False),
         (0.4, False), (0.3, True), (0.2, False), (0.1, False), (0.05, False)]


def test_risk_coverage_ece_and_brier_on_known_answers() -> None:
    s = calibrate.summary(KNOWN)
    assert s["precision_at_coverage"] == pytest.approx(
        {"0.5": 3 / 5, "0.7": 4 / 7, "0.9": 4 / 9, "1": 4 / 10})
    assert s["coverage_at_precision"] == {"0.95": 0.2, "0.98": 0.2, "0.99": 0.2}
    assert s["ece"] == pytest.approx(3.35 / 10)
    assert s["brier"] == pytest.approx(1.6525 / 10)
    # A threshold keeps ties together: one right and one wrong at 0.9 allow no coverage.
    assert calibrate.coverage_at([(0.9, True), (0.9, False), (0.1, False)], 0.95) == 0.0
    assert calibrate.coverage_at([(0.9, True), (0.5, True)], 0.99) == 1.0
    perfect = [(1.0, True), (0.0, False)]
    assert calibrate.ece(perfect) == 0.0 and calibrate.brier(perfect) == 0.0


def test_the_report_covers_every_field_and_all_and_plots_a_png(tmp_path: Path) -> None:
    pairs = {f: KNOWN for f in FIELDS}
    report = calibrate.confidence_report(pairs)
    assert set(report) == {*FIELDS, "all"} and report["all"]["n"] == 4 * len(KNOWN)
    assert report["all"]["brier"] == pytest.approx(report["name"]["brier"])
    assert "P@50%" in calibrate.format_confidence(report)
    json.dumps(report)
    png = calibrate.plot_risk_coverage(pairs, tmp_path / "eval" / "risk_coverage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reports_confidence_of_copy_decoding(engine: Engine) -> None:
    from trainer.data import Record
    from trainer.evaluate import evaluate_engine, scored_fields

    records = [Record(t, dict.fromkeys(FIELDS)) for t in TEXTS]
    pairs: dict[str, list[tuple[float, bool]]] = {}
    report = evaluate_engine(engine, records, "copy", 4, progress=False, pairs=pairs)
    assert report["confidence"]["all"]["n"] == len(TEXTS) * len(FIELDS)
    assert set(pairs) == set(FIELDS) and all(len(p) == len(TEXTS) for p in pairs.values())
    preds = [None] * len(records)
    assert scored_fields(preds, [{}] * len(records), records) == {}  # nothing traced
    assert scored_fields(preds, [{"name": 0.8}, {}, {}, {}], records)["email"][0] == (0.0, False)
