"""Retraining from an adapter on corrections: the stable gate split, the mix, the warm
start, the gate in the manifest and promotion of winners only (tiny random models)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.adapters import Registry
from core.errors import ConfigError, DataError
from core.manifest import Manifest
from core.settings import Settings
from trainer.data import Record, synth_records
from trainer.lora import TrainConfig, train
from trainer.retrain import (
    Retrain,
    decide,
    gate_split,
    in_gate,
    mix,
    publish_and_gate,
    split_rows,
    warm_start,
)
from trainer.tasks import TrainRequest, parse_request

FAST = {"batch_size": 4, "eval_every": 2, "save_every": 1, "log_every": 1, "eval_limit": 3,
        "eval_batch_size": 4, "max_len": 1024, "progress": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def corrections(n: int, seed: int) -> list[Record]:
    return [Record(r.text, r.gold, ["correction", "page"]) for r in synth_records(n, seed)]


# --- the split and the mix ----------------------------------------------------------


def test_the_gate_split_is_stable_as_corrections_grow_and_holds_about_its_share() -> None:
    first = corrections(60, seed=5)
    more = first + corrections(300, seed=6)
    train_a, gate_a = gate_split(first)
    train_b, gate_b = gate_split(more)
    texts_b = {r.text for r in gate_b}
    assert {r.text for r in gate_a} <= texts_b  # no gate row moved into training
    assert not {r.text for r in train_a} & texts_b
    assert 0.2 < len(gate_b) / len(more) < 0.4  # GATE_SHARE 0.3
    # the same text, whatever its width or spacing, goes the same way
    assert in_gate("ＡＢＣ  停电") == in_gate("ABC 停电")


def test_mix_repeats_corrections_to_their_share_and_keeps_every_replayed_row() -> None:
    replay, fixes = synth_records(90, seed=1), corrections(10, seed=2)
    mixed = mix(replay, fixes, share=0.5)
    kept = [r for r in mixed if "correction" not in r.tags]
    assert kept == replay  # all of them, in their order
    copies = [r for r in mixed if "correction" in r.tags]
    assert len(copies) == 90 and all(copies.count(r) == 9 for r in fixes)
    assert "correction" in mixed[len(mixed) // 2 - 1].tags or \
        "correction" in mixed[len(mixed) // 2].tags  # spread through, not all at the end
    assert mix(replay, fixes[:1], share=0.01) .count(fixes[0]) == 1  # at least once
    assert split_rows(mixed) == (replay, copies)


def test_a_retrain_needs_corrections_on_both_sides_of_the_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="a retrain needs both"):
        Retrain(tmp_path, "v1", corrections(1, seed=3))
    with pytest.raises(ConfigError, match="share"):
        Retrain(tmp_path, "v1", corrections(40, seed=3), share=1.0)


def test_the_gate_passes_only_a_winner_that_keeps_the_synthetic_score() -> None:
    parent = {"gate": 0.50, "synthetic": 0.90}
    assert decide(parent, {"gate": 0.60, "synthetic": 0.895})[0]
    assert not decide(parent, {"gate": 0.50, "synthetic": 0.95})[0]  # a tie is no win
    passed, why = decide(parent, {"gate": 0.70, "synthetic": 0.88})
    assert not passed and "fell 0.020" in why


# --- runs on a tiny model -------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
         ) -> tuple[Settings, Path, Manifest, Path, Manifest]:
    """A parent run and a child warm-started from it on corrections."""
    root = tmp_path_factory.mktemp("retrain")
    settings = Settings(base_model=str(tiny_model), cache_dir=root / "cache")
    parent_dir = root / "parent"
    parent = train(settings, synth_records(30, seed=3), parent_dir,
                   TrainConfig(max_steps=2, layers=[-1], r=8, alpha=16, **FAST))
    fixes = corrections(20, seed=7)
    retrain = Retrain(parent_dir / "adapter", parent.version, fixes)
    child_dir = root / "child"
    # r=4 asked, but a warm start keeps the parent's shape
    child = train(settings, synth_records(30, seed=3), child_dir,
                  TrainConfig(max_steps=2, r=4, **FAST), retrain=retrain)
    return settings, parent_dir, parent, child_dir, child


def test_a_warm_start_begins_from_the_parents_weights(runs: Any) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    settings, parent_dir, *_ = runs
    model = AutoModelForCausalLM.from_pretrained(settings.base_model)
    wrapped, layers, _targets = warm_start(model, parent_dir / "adapter")
    saved = load_file(str(parent_dir / "adapter/adapter_model.safetensors"))
    state = {k: v for k, v in wrapped.state_dict().items() if "lora_" in k}
    assert layers == [1] and saved
    for name, tensor in saved.items():
        live = next(v for k, v in state.items() if k.replace(".default", "") == name)
        assert (live == tensor).all(), name
    assert any(p.requires_grad for n, p in wrapped.named_parameters() if "lora_" in n)


def test_a_retrain_records_its_parent_and_both_gate_scores(runs: Any) -> None:
    _, _, parent, child_dir, child = runs
    loaded = Manifest.load(child_dir)
    assert loaded.parent == parent.version  # type: ignore[attr-defined]
    gate = loaded.gate  # type: ignore[attr-defined]
    assert set(gate["parent"]) == set(gate["new"]) == {"gate", "synthetic"}
    assert all(0 <= v <= 1 for v in [*gate["parent"].values(), *gate["new"].values()])
    assert gate["passed"] == decide(gate["parent"], gate["new"])[0] and gate["reason"]
    assert gate["gate_rows"] + gate["correction_rows"] == 20 and loaded.data["corrections"] == 20
    assert (loaded.lora.r, loaded.lora.alpha, loaded.lora.layers) == (8, 16, [1])


def _with_gate(run_dir: Path, dest: Path, version: str, passed: bool) -> Path:
    shutil.copytree(run_dir, dest)
    data = json.loads((dest / "manifest.json").read_text())
    data["version"], data["gate"]["passed"] = version, passed
    (dest / "manifest.json").write_text(json.dumps(data))
    return dest


def test_promote_if_better_promotes_only_a_run_that_passed_its_gate(
    runs: Any, redis_db: redis.Redis, redis_url: str, tmp_path: Path,
) -> None:
    settings, parent_dir, parent, child_dir, _ = runs
    settings = settings.model_copy(update={"redis_url": redis_url,
                                           "cache_dir": tmp_path / "cache"})
    registry = Registry(redis_db, settings)
    registry.publish(parent_dir)
    registry.promote(parent.version)
    loser = _with_gate(child_dir, tmp_path / "loser", "child-lost", passed=False)
    out = publish_and_gate(settings, loser, promote=True)
    assert out["passed"] is False and out["promoted"] is False
    assert registry.active() == parent.version
    assert "child-lost" in [r.version for r in registry.versions()]  # published all the same
    winner = _with_gate(child_dir, tmp_path / "winner", "child-won", passed=True)
    out = publish_and_gate(settings, winner, promote=True)
    assert out == {"version": "child-won", "passed": True, "promoted": True,
                   "reason": out["reason"]}
    assert registry.active() == "child-won"


# --- the queued request ---------------------------------------------------------------


def test_a_queued_retrain_names_a_version_never_a_path() -> None:
    ok = TrainRequest.model_validate({"synth_rows": 100, "from_adapter": "active",
                                      "corrections": True, "promote_if_better": True})
    assert ok.load() and len(ok.load()) == 100
    for bad in ("../runs/x", "/etc", "a/b"):
        with pytest.raises(ConfigError, match="not a valid adapter version"):
            parse_request({"synth_rows": 10, "from_adapter": bad})
    with pytest.raises(ValueError, match="name from_adapter"):
        TrainRequest.model_validate({"synth_rows": 10, "corrections": True})
    with pytest.raises(ValueError, match="exactly one"):
        TrainRequest.model_validate({"synth_rows": 10, "data": "x.jsonl"})


def test_the_corrections_study_scores_the_parent_and_a_retrained_child(
    runs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiqu.cli import main
    from trainer.data import load_records, save_records
    from trainer.fresh import FRESH_PATH

    settings, parent_dir, parent, *_ = runs
    data = tmp_path / "fresh.jsonl"
    save_records(load_records(FRESH_PATH)[:40], data, "gold")
    monkeypatch.setenv("TIQU_BASE_MODEL", settings.base_model)
    monkeypatch.setenv("TIQU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("trainer.retrain.RETRAIN_CONFIG",
                        {"max_steps": 1, "batch_size": 4, "eval_limit": 3, "progress": False,
                         "max_len": 1024})
    monkeypatch.setattr("trainer.retrain.REPLAY_ROWS", 12)
    out = tmp_path / "study"
    assert main(["study", "corrections", "--parent", str(parent_dir), "--data", str(data),
                 "--ks", "0,16", "--out", str(out)]) == 0
    table = json.loads((out / "table.json").read_text())
    assert table["parent"] == parent.version and table["pool"] + table["test"] == 40
    k0, k16 = table["rows"]
    assert k0["k"] == 0 and "gate" not in k0 and k0["test"]["n"] == table["test"]
    assert k16["gate"]["gate_rows"] + k16["gate"]["correction_rows"] == 16
    assert k16["steps"] == 1 and k16["retrain_s"] > 0 and k16["test"]["n"] == table["test"]
    assert (out / "k16" / "manifest.json").is_file()
