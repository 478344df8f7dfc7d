"""The trainer on tiny random models: tokenisation, config checks, scoring, and real runs.

Runs train for a few steps on CPU and check the exact files written. torch is
limited to one thread: on a busy machine, a tiny model trains many times faster
without OpenMP threads spinning against each other.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError, DataError, IncompatibleAdapter
from core.manifest import Manifest, sha256_file
from core.prompting import PROMPT_VERSION, render_prompt
from core.schema import FIELDS, SCHEMA_VERSION, Complaint, answer_json
from core.settings import Settings
from tests.tiny import QWEN3_CHAT, build_tokenizer
from trainer.data import Record, load_records, save_records, synth_records
from trainer.evaluate import char_f1, format_table, score
from trainer.lora import TrainConfig, resolve_layers, train
from trainer.sft import IGNORE, PadCollator, answer_loss, encode_record, encode_records

RUN_FILES = {
    "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
    "eval.json", "loss.png", "manifest.json", "risk_coverage.png",
}
FAST = {"batch_size": 4, "eval_every": 2, "save_every": 1, "log_every": 1, "eval_limit": 3,
        "eval_batch_size": 4, "max_len": 1024, "progress": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tokenizers() -> list[Any]:
    qwen = build_tokenizer("bpe")
    qwen.chat_template = QWEN3_CHAT
    return [build_tokenizer("bpe"), build_tokenizer("sp"), qwen]


RECORD = Record("姓名：李四，邮箱：lisi@test.cn。小区停电没人管！",
                {"name": "李四", "address": None, "email": "lisi@test.cn",
                 "question": "小区停电没人管！"})


# --- tokenisation ---------------------------------------------------------------


@pytest.mark.parametrize("tok", _tokenizers(), ids=["bpe", "sp", "qwen3"])
def test_training_prompt_ids_equal_inference_ids_and_labels_cover_only_the_answer(tok: Any) -> None:
    example = encode_record(tok, RECORD)
    # exactly how inference.engine tokenises its prompts
    served = tok([render_prompt(tok, RECORD.text)], add_special_tokens=False)["input_ids"][0]
    n = len(served)
    assert example.input_ids[:n] == served
    assert example.prompt_len == n
    assert example.labels[:n] == [IGNORE] * n
    assert example.labels[n:] == example.input_ids[n:]
    assert example.labels[-1] == tok.eos_token_id
    answer = tok.decode(example.labels[n:])
    assert answer == answer_json(RECORD.gold) + tok.eos_token


def test_rows_over_max_len_are_dropped_and_counted_never_truncated() -> None:
    tok = build_tokenizer("bpe")
    records = synth_records(12, seed=5)
    full = [encode_record(tok, r) for r in records]
    limit = sorted(len(e.input_ids) for e in full)[6]
    encoded = encode_records(tok, records, max_len=limit)
    kept = [e for e in full if len(e.input_ids) <= limit]
    assert encoded.dropped == len(full) - len(kept) > 0
    assert [e.input_ids for e in encoded.examples] == [e.input_ids for e in kept]
    assert encoded.longest == max(len(e.input_ids) for e in full)


def test_padding_is_masked_and_an_eos_that_equals_pad_is_still_learned() -> None:
    tok = build_tokenizer("bpe")
    a, b = encode_record(tok, RECORD), encode_record(tok, synth_records(1, seed=2)[0])
    eos = tok.eos_token_id
    batch = PadCollator(pad_id=eos)([
        {"input_ids": a.input_ids, "labels": a.labels},
        {"input_ids": b.input_ids, "labels": b.labels},
    ])
    short, width = min(a, b, key=lambda e: len(e.input_ids)), batch["input_ids"].shape[1]
    row = 0 if short is a else 1
    n = len(short.input_ids)
    assert batch["labels"][row, n - 1].item() == eos  # the answer's own end-of-turn
    assert batch["labels"][row, n:].tolist() == [IGNORE] * (width - n)
    assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)


def test_answer_loss_equals_the_models_own_loss_and_gradient(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rows = [{"input_ids": e.input_ids, "labels": e.labels}
            for e in encode_records(tok, synth_records(4, seed=6), 4096).examples]
    batch = PadCollator(tok.pad_token_id)(rows)
    head = model.get_output_embeddings().weight

    ours = answer_loss(model, batch)
    ours.backward()
    grad = head.grad.clone()
    head.grad = None
    theirs = model(**batch).loss
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(grad, head.grad, rtol=1e-4, atol=1e-7)
    # with the Trainer's token count over accumulated micro-batches, it is a sum / count
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert answer_loss(model, batch, 2 * n).item() == pytest.approx(theirs.item() / 2, rel=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_training_from_the_cached_frozen_prefix_gives_the_same_loss_and_gradients(
    arch: str, tmp_path: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny import build_model
    from trainer import prefix
    from trainer.lora import add_lora

    folder = build_model(tmp_path / arch, "bpe", seed=1, layers=4, arch=arch)
    tok = AutoTokenizer.from_pretrained(folder)
    model, layers, _ = add_lora(AutoModelForCausalLM.from_pretrained(folder),
                                TrainConfig(layers=[2, 3], dropout=0.0))
    assert prefix.why_not(model, layers) is None
    examples = encode_records(tok, synth_records(6, seed=6), 4096).examples
    collate = PadCollator(tok.pad_token_id)
    cache = prefix.build(model, examples, 2, collate, "cpu", batch_size=4, progress=False)
    assert cache is not None and len(cache.states) == 6
    assert [len(s) for s in cache.states] == [len(e.input_ids) for e in examples]
    assert model.training  # build() leaves the train/eval mode as it found it

    def loss_and_grads(rows: list[dict[str, Any]]) -> tuple[float, list[Any]]:
        model.zero_grad()
        loss = answer_loss(model, collate(rows))
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    picked = [0, 3, 5]  # rows of different lengths: padding in both paths
    plain = [{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in picked]
    cached = [row | cache.row(i) for row, i in zip(plain, picked, strict=True)]
    full_loss, full_grads = loss_and_grads(plain)
    short_loss, short_grads = loss_and_grads(cached)
    assert short_loss == pytest.approx(full_loss, rel=1e-5)
    assert len(full_grads) == 2 * 2 * 7  # A and B, 2 layers, 7 linear modules
    for a, b in zip(full_grads, short_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in short_grads)


def test_the_frozen_prefix_is_not_cached_where_it_would_not_be_exact(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tests.tiny import build_model
    from trainer import prefix
    from trainer.lora import add_lora

    folder = build_model(tmp_path / "m", "bpe", seed=1, layers=3)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert prefix.why_not(model, None) == "LoRA starts at layer 0"
    assert prefix.why_not(model, [0, 2]) == "LoRA starts at layer 0"
    model.config.attention_dropout = 0.1
    assert "dropout" in str(prefix.why_not(model, [2]))
    model.config.attention_dropout = 0.0
    model.config.layer_types = ["sliding_attention", "full_attention", "full_attention"]
    assert "mixes layer types" in str(prefix.why_not(model, [2]))
    model.config.layer_types = ["full_attention"] * 3
    peft_model, layers, _ = add_lora(model, TrainConfig(layers=[2], dropout=0.3))
    assert prefix.why_not(peft_model, layers) is None  # LoRA's own dropout is above the cut


# --- config ---------------------------------------------------------------------


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(r=0, dropout=1.5, lr=0.0, max_len=4, layers=[], report_to=["mlflow"])
    message = str(err.value)
    for field in ("r must be", "dropout", "lr must", "max_len", "layers", "report_to 'mlflow'"):
        assert field in message
    with pytest.raises(ConfigError, match=r"unknown training options \['rank'\]"):
        TrainConfig.from_dict({"rank": 8})
    assert TrainConfig().r == 8 and TrainConfig().alpha == 32 and TrainConfig().lr == 1e-4


def test_layers_count_from_the_top_and_are_range_checked() -> None:
    assert resolve_layers([-2, -1], 30) == [28, 29]
    assert resolve_layers([0, 5], 30) == [0, 5]
    assert resolve_layers(None, 30) is None
    with pytest.raises(ConfigError, match=r"layers \[30\] out of range for a model with 30"):
        resolve_layers([30], 30)


# --- scoring --------------------------------------------------------------------


def test_score_normalises_counts_null_matches_and_fails_invalid_rows() -> None:
    gold = [
        Record("张三 ＡＢＣ＠ｑｑ.com 断网", {"name": "张三", "address": None,
               "email": "ＡＢＣ＠ｑｑ.com", "question": "断网"}, tags=["fullwidth"]),
        Record("李四 停电", {"name": "李四", "address": None, "email": None,
               "question": "停电"}, tags=["oneline"]),
    ]
    preds = [
        Complaint(name="张三", address=None, email="ABC@qq.com", question="断网了"),
        None,
    ]
    report = score(preds, gold)
    overall = report["overall"]
    assert overall["n"] == 2 and overall["valid_json"] == 0.5
    assert overall["exact"] == {"name": 0.5, "address": 0.5, "email": 0.5, "question": 0.0}
    assert overall["field_exact"] == pytest.approx(1.5 / 4)
    assert overall["row_exact"] == 0.0
    assert overall["grounded"] == pytest.approx(1 / 3)  # only 张三 is verbatim in the text
    assert report["tags"]["fullwidth"]["field_exact"] == 0.75
    assert report["tags"]["oneline"]["valid_json"] == 0.0
    assert char_f1("断网了", "断网") == pytest.approx(0.8)
    assert char_f1(None, None) == 1.0 and char_f1("x", None) == 0.0
    table = format_table(report)
    assert table.splitlines()[2].startswith("all") and "fullwidth" in table


# --- real runs ------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    head = path.read_bytes()[:24]
    width, height = struct.unpack(">II", head[16:24])
    return head[:8] == b"\x89PNG\r\n\x1a\n" and width > 100 and height > 100


def test_the_loss_plot_turns_logarithmic_when_the_loss_falls_far(tmp_path: Path) -> None:
    from trainer.plots import log_scale, loss_points, plot_loss

    history = [{"step": 1, "loss": 0.3}, {"step": 100, "loss": 0.01, "eval_loss": 0.02},
               {"step": 600, "loss": 0.003, "eval_loss": 0.0044}]
    points = loss_points(history)
    assert points["eval"] == [(100, 0.02), (600, 0.0044)]
    assert log_scale(points)  # 0.3 / 0.003 = 100
    assert log_scale(loss_points(history[:2]))  # 0.3 / 0.01 = 30
    assert not log_scale(loss_points([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]))
    assert not log_scale(loss_points([{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.0}]))
    assert not log_scale({"train": [], "eval": []})
    assert _is_png(plot_loss(history, tmp_path / "loss.png"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Manifest]:
    """One 2-step run on a tiny model: (model folder, run folder, manifest)."""
    from tests.tiny import build_model

    root = tmp_path_factory.mktemp("train")
    model = build_model(root / "model", "bpe", seed=0)
    out = root / "run"
    config = TrainConfig(max_steps=2, layers=[-1], **FAST)
    manifest = train(Settings(base_model=str(model)), synth_records(40, seed=3), out, config)
    return model, out, manifest


def test_two_step_run_writes_exactly_the_expected_files(run: tuple[Path, Path, Manifest]) -> None:
    from safetensors import safe_open

    model, out, manifest = run
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == RUN_FILES
    loaded = Manifest.load(out)
    assert loaded == manifest
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", loaded.version)
    assert loaded.base_model == str(model) and len(loaded.base_model_hash) == 16
    assert (loaded.prompt_version, loaded.schema_version) == (PROMPT_VERSION, SCHEMA_VERSION)
    assert loaded.lora.r == 8 and loaded.lora.layers == [1]
    assert loaded.data["rows"] == 40 and loaded.data["dropped"] == 0
    assert sum(loaded.data[s] for s in ("train", "val", "test")) == 40
    assert loaded.timings["steps"] == 2
    assert loaded.timings["prefix_cache_s"] > 0  # LoRA on layer 1 only: layer 0 ran once a row
    for name, digest in loaded.files.items():
        assert sha256_file(out / "adapter" / name) == digest
    with safe_open(str(out / "adapter/adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and all(".layers.1." in k for k in keys)  # LoRA only on the top layer
    assert _is_png(out / "loss.png")
    scores = json.loads((out / "eval.json").read_text())
    assert scores["overall"]["n"] == loaded.metrics["eval_rows"] == loaded.data["test"] > 0
    assert loaded.metrics["valid_json"] == scores["overall"]["valid_json"]
    assert loaded.metrics["train_loss"] > 0 and loaded.metrics["eval_loss"] > 0
    # Copy decoding: raw confidences measured; too few rows per field for a map.
    rows = scores["overall"]["n"]
    assert scores["calibrated"] is False and scores["confidence"]["all"]["n"] == rows * len(FIELDS)
    assert loaded.calibration == {}
    assert _is_png(out / "risk_coverage.png")


def test_eval_cli_scores_an_adapter_and_refuses_an_incompatible_one(
    run: tuple[Path, Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inference.engine import Engine
    from tiqu.cli import main
    from trainer.evaluate import load_checked_adapter

    model, out, manifest = run
    data = save_records(synth_records(3, seed=9), tmp_path / "eval.jsonl", fmt="gold")
    monkeypatch.setenv("TIQU_BASE_MODEL", str(model))
    report_path = tmp_path / "report.json"
    preds_path = tmp_path / "preds.jsonl"
    code = main(["eval", "--data", str(data), "--adapter", str(out), "--json", str(report_path),
                 "--no-progress", "--batch-size", "3", "--predictions", str(preds_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["overall"]["n"] == 3 and report["adapter_version"] == manifest.version
    rows = [json.loads(line) for line in preds_path.read_text().splitlines()]
    assert [r["text"] for r in rows] == [r.text for r in load_records(data)]
    wrong = sum(len(r["wrong"]) for r in rows)  # the per-field misses behind field_exact
    assert wrong == round((1 - report["overall"]["field_exact"]) * 3 * len(FIELDS))
    assert report["overall"]["valid_json"] == 1.0  # copy-constrained decoding, even untrained
    assert "field" in capsys.readouterr().out
    assert set(report["confidence"]) == {*FIELDS, "all"}
    assert _is_png(tmp_path / "risk_coverage.png")  # next to --json
    assert all(set(r["confidence"]) == set(FIELDS) for r in rows)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter").symlink_to(out / "adapter")
    Manifest.model_validate({**manifest.model_dump(), "prompt_version": "0"}).save(broken)
    engine = Engine(Settings(base_model=str(model)))
    with pytest.raises(IncompatibleAdapter, match=r"prompt version '0' != engine prompt version"):
        load_checked_adapter(engine, broken)


def test_a_run_fits_a_calibration_map_that_its_adapter_serves_with(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.engine import Engine
    from trainer import calibrate
    from trainer.evaluate import evaluate_engine, load_checked_adapter

    monkeypatch.setattr(calibrate, "MIN_FIT_ROWS", 1)  # a 2-step run scores a few rows
    config = TrainConfig(max_steps=2, layers=[-1], **FAST)
    manifest = train(Settings(base_model=str(tiny_model)), synth_records(40, seed=3),
                     tmp_path / "run", config)
    assert set(manifest.calibration) == set(FIELDS)
    assert Manifest.load(tmp_path / "run").calibration == manifest.calibration
    engine = Engine(Settings(base_model=str(tiny_model)))
    load_checked_adapter(engine, tmp_path / "run")
    assert engine.calibration == manifest.calibration
    records = synth_records(2, seed=5)
    report = evaluate_engine(engine, records, "copy", 2, progress=False)
    assert report["calibrated"] is True and report["confidence"]["all"]["n"] == 2 * len(FIELDS)


def test_bad_rows_give_a_data_error_and_write_nothing(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiqu.cli import main

    good = {"text": "张三 断网", "gold": {"name": "张三", "address": None, "email": None,
                                       "question": "断网"}}
    bad_value = {"text": "李四 停电", "gold": {**good["gold"], "name": "王五"}}
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join([json.dumps(good), json.dumps(bad_value), "{not json"]) + "\n")
    out = tmp_path / "run"
    monkeypatch.setenv("TIQU_BASE_MODEL", str(tiny_model))
    assert main(["train", "--data", str(data), "--out", str(out), "--max-steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "2 bad row(s)" in err and "row 2: gold 'name'" in err and "row 3: invalid JSON" in err
    assert not out.exists()
    # rows that all exceed max_len are refused after tokenising, still before any write
    with pytest.raises(DataError, match=r"no training rows: .* longer than max_len 16"):
        train(Settings(base_model=str(tiny_model)), synth_records(20, seed=1), out,
              TrainConfig(max_len=16, max_steps=1, progress=False))
    assert not out.exists()


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path, tiny_model: Path) -> None:
    settings, records, out = Settings(base_model=str(tiny_model)), synth_records(24, 4), tmp_path

    def stop_at_step_2(meta: dict[str, Any]) -> None:
        if meta["phase"] == "train" and meta["step"] == 2:
            raise KeyboardInterrupt

    config = TrainConfig(max_steps=3, **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(settings, records, out / "run", config, on_progress=stop_at_step_2)
    assert [p.name for p in (out / "run/checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    state = json.loads((out / "run/checkpoints/run.json").read_text())
    with pytest.raises(ConfigError, match="unfinished run; resume it"):
        train(settings, records, out / "run", config)
    with pytest.raises(ConfigError, match="resume data hash"):
        train(settings, records[:-1], out / "run", TrainConfig(max_steps=3, resume=True, **FAST))
    steps: list[int] = []

    def record_steps(meta: dict[str, Any]) -> None:
        if meta["phase"] == "train":
            steps.append(meta["step"])

    resume = TrainConfig(max_steps=3, resume=True, **FAST)
    manifest = train(settings, records, out / "run", resume, on_progress=record_steps)
    assert steps == [2, 3]  # step 1 came from the checkpoint
    assert manifest.version == state["version"] and manifest.timings["steps"] == 3
    assert not (out / "run/checkpoints").exists()
    with pytest.raises(ConfigError, match="holds a finished run"):
        train(settings, records, out / "run", config)


def test_a_time_limit_ends_training_early(tmp_path: Path, tiny_model: Path) -> None:
    config = TrainConfig(max_steps=50, max_train_s=1e-3, **{**FAST, "eval_limit": 0})
    manifest = train(Settings(base_model=str(tiny_model)), synth_records(24, 4),
                     tmp_path / "run", config)
    assert manifest.timings["steps"] == 1  # checked after every step
    assert (tmp_path / "run/adapter/adapter_model.safetensors").exists()


@pytest.mark.gpu
def test_two_steps_on_cuda_in_bf16(tmp_path: Path, tiny_model: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    settings = Settings(base_model=str(tiny_model), device="cuda")
    manifest = train(settings, synth_records(24, 4), tmp_path / "run",
                     TrainConfig(max_steps=2, **FAST))
    assert manifest.timings["device"] == "cuda" and manifest.timings["dtype"] == "bfloat16"
