"""The adapter registry on real Redis: publish to both stores, verified fetches,
promotion and rollback history, the promotion gate, and the ``tiqu adapters`` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis

from core.adapter_stores import BLOB_PREFIX, CHUNK_BYTES
from core.adapters import (
    HISTORY_KEY,
    Registry,
    check_compatible,
    now_iso,
    score_keys,
    should_promote,
)
from core.errors import ConfigError, IncompatibleAdapter, ModelNotFound
from core.manifest import Manifest, sha256_file
from core.names import ACTIVE_ADAPTER_KEY
from core.settings import Settings


def make_adapter(model_dir: Path, out: Path, version: str, seed: int,
                 base_hash: str | None = None, metrics: dict[str, Any] | None = None) -> Path:
    """A trainer-style folder (adapter/ + manifest.json) with a random LoRA on
    ``model_dir``: lora_B is random too (init_lora_weights=False), so outputs differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from inference.models import model_fingerprint

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                        init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out / "adapter")
    Manifest(version=version, created_at=now_iso(), base_model=str(model_dir),
             base_model_hash=base_hash or model_fingerprint(str(model_dir)),
             metrics=metrics or {}).save(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("ad") / "v1", "v1", seed=1,
                        metrics={"field_exact": 0.5, "char_f1": 0.7, "n": 32})


def registry(redis_db: redis.Redis, tmp_path: Path, **kw: Any) -> Registry:
    return Registry(redis_db, Settings(cache_dir=tmp_path / "cache", **kw))


def test_publish_folder_store_and_verified_cache(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path)
    record = reg.publish(adapter_dir)
    assert record.version == "v1" and record.store == "folder"
    weights = adapter_dir / "adapter" / "adapter_model.safetensors"
    assert record.manifest.files["adapter_model.safetensors"] == sha256_file(weights)
    stored = tmp_path / "cache" / "adapters" / "v1"
    assert Manifest.load(stored).files == record.manifest.files
    assert [r.version for r in reg.versions()] == ["v1"]
    assert reg.get("v1").manifest.metrics["field_exact"] == 0.5

    cached = reg.fetch("v1") / "adapter_model.safetensors"
    assert cached.read_bytes() == weights.read_bytes()
    cached.write_bytes(b"garbage")  # a corrupt cache is noticed and fetched again
    assert reg.fetch("v1") == cached.parent
    assert cached.read_bytes() == weights.read_bytes()

    store_copy = stored / "adapter" / "adapter_model.safetensors"
    store_copy.write_bytes(weights.read_bytes()[:-1] + b"\0")
    cached.unlink()
    with pytest.raises(IncompatibleAdapter) as err:
        reg.fetch("v1")
    message = str(err.value)
    assert "'adapter_model.safetensors'" in message
    assert sha256_file(store_copy) in message and sha256_file(weights) in message
    assert not cached.exists()


def test_redis_store_chunks_round_trip_and_limits(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "big"
    (src / "adapter").mkdir(parents=True)
    (src / "adapter" / "adapter_config.json").write_bytes(
        (adapter_dir / "adapter" / "adapter_config.json").read_bytes())
    payload = os.urandom(2 * CHUNK_BYTES + 12345)
    (src / "adapter" / "adapter_model.safetensors").write_bytes(payload)
    Manifest.load(adapter_dir).model_copy(update={"version": "big", "files": {}}).save(src)

    reg = registry(redis_db, tmp_path, adapter_store="redis")
    record = reg.publish(src)
    assert record.store == "redis" and record.chunks["adapter_model.safetensors"] == 3
    keys = list(redis_db.scan_iter(match=BLOB_PREFIX + "big:*"))
    assert len(keys) == 4  # 3 chunks of weights + 1 of config
    assert all(0 < redis_db.strlen(k) <= CHUNK_BYTES for k in keys)
    assert (reg.fetch("big") / "adapter_model.safetensors").read_bytes() == payload

    redis_db.setrange(BLOB_PREFIX + "big:adapter_model.safetensors:1", 10, b"XX")
    (reg.fetch("big") / "adapter_model.safetensors").unlink()
    with pytest.raises(IncompatibleAdapter, match="adapter_model.safetensors"):
        reg.fetch("big")

    huge = tmp_path / "huge"
    (huge / "adapter").mkdir(parents=True)
    (huge / "adapter" / "adapter_config.json").write_text("{}")
    with open(huge / "adapter" / "adapter_model.safetensors", "wb") as fh:
        fh.truncate(65 << 20)  # sparse: refused by size before any byte is read
    Manifest.load(adapter_dir).model_copy(update={"version": "huge", "files": {}}).save(huge)
    with pytest.raises(ConfigError, match=r"size \d+ bytes > redis store limit 67108864"):
        reg.publish(huge)
    assert not list(redis_db.scan_iter(match=BLOB_PREFIX + "huge:*"))
    with pytest.raises(ModelNotFound):
        reg.get("huge")


def test_publish_refusals(redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path) -> None:
    reg = registry(redis_db, tmp_path)
    with pytest.raises(ModelNotFound, match="manifest.json"):
        reg.publish(tmp_path)
    with pytest.raises(ConfigError, match="'none' is not valid"):
        reg.publish(adapter_dir, version="none")
    reg.publish(adapter_dir)
    with pytest.raises(ConfigError, match="'v1' is already published"):
        reg.publish(adapter_dir)
    bad = tmp_path / "bad"
    (bad / "adapter").mkdir(parents=True)
    for f in (adapter_dir / "adapter").iterdir():
        (bad / "adapter" / f.name).write_bytes(f.read_bytes())
    Manifest.load(adapter_dir).model_copy(update={
        "version": "bad", "files": {"adapter/adapter_model.safetensors": "0" * 64}}).save(bad)
    with pytest.raises(IncompatibleAdapter, match="manifest sha256 '0000"):
        reg.publish(bad)


def test_promote_rollback_and_history(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path)
    reg.publish(adapter_dir)
    reg.publish(adapter_dir, version="v2")
    assert reg.active() is None
    with pytest.raises(ConfigError, match="no promotion to roll back"):
        reg.rollback()
    with pytest.raises(ModelNotFound, match="'v9' is not published"):
        reg.promote("v9")
    assert redis_db.get(ACTIVE_ADAPTER_KEY) is None

    reg.promote("v1", reason="first")
    reg.promote("v2", reason="better")
    assert redis_db.get(ACTIVE_ADAPTER_KEY) == b"v2"
    back = reg.rollback("bad answers")
    assert (back.from_version, back.to_version, back.kind) == ("v2", "v1", "rollback")
    assert reg.rollback().to_version == "none"
    assert reg.active() == "none"
    reg.promote("v2")
    assert reg.rollback().to_version == "none"  # v1 and v2 were both rolled back
    with pytest.raises(ConfigError, match="no promotion to roll back"):
        reg.rollback()

    hist = reg.history()
    assert [(h.from_version, h.to_version) for h in hist] == [
        (None, "v1"), ("v1", "v2"), ("v2", "v1"), ("v1", "none"), ("none", "v2"),
        ("v2", "none")]
    assert [h.reason for h in hist[:3]] == ["first", "better", "bad answers"]
    assert all(h.at for h in hist) and redis_db.llen(HISTORY_KEY) == 6
    assert [h.to_version for h in reg.history(2)] == ["v2", "none"]


def test_should_promote_gate() -> None:
    active = {"field_exact": 0.50, "char_f1": 0.70, "n": 32, "eval_set": "abc"}
    better = {"field_exact": 0.55, "char_f1": 0.70, "n": 10, "eval_set": "abc"}
    ok = should_promote(better, active)
    assert ok.promote and "field_exact 0.55 vs 0.5" in ok.reason
    assert score_keys(better, active) == ["char_f1", "field_exact"]  # counts never compared
    worse = should_promote({**better, "char_f1": 0.68}, active)
    assert not worse.promote and "char_f1 0.68 < active 0.7" in worse.reason
    assert should_promote({**better, "char_f1": 0.68}, active, margin=0.05).promote
    assert not should_promote(better, active, margin=-0.01).promote  # demands a gain
    other = should_promote({**better, "eval_set": "xyz"}, active)
    assert not other.promote and "eval set 'xyz' != active eval set 'abc'" in other.reason
    assert should_promote(better, None).promote
    assert not should_promote({"loss": 0.1}, {"loss": 0.2}).promote  # nothing comparable


def test_promote_if_better_uses_active_manifest_metrics(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path)
    reg.publish(adapter_dir)
    worse = tmp_path / "worse"
    worse.mkdir()
    (worse / "adapter").symlink_to(adapter_dir / "adapter")
    Manifest.load(adapter_dir).model_copy(update={
        "version": "v2", "metrics": {"field_exact": 0.4, "char_f1": 0.9}}).save(worse)
    reg.publish(worse)
    decision, entry = reg.promote_if_better("v1")
    assert decision.promote and entry is not None and reg.active() == "v1"
    decision, entry = reg.promote_if_better("v2")
    assert not decision.promote and entry is None and reg.active() == "v1"
    assert "field_exact 0.4 < active 0.5" in decision.reason
    decision, entry = reg.promote_if_better("v2", margin=0.1, reason="nightly")
    assert entry is not None and entry.reason.startswith("nightly; no worse")


def test_check_compatible_names_both_values(adapter_dir: Path) -> None:
    manifest = Manifest.load(adapter_dir)
    check_compatible(manifest, manifest.base_model_hash)
    with pytest.raises(IncompatibleAdapter) as err:
        check_compatible(manifest.model_copy(update={"prompt_version": "0"}), "ffff")
    message = str(err.value)
    assert f"adapter base model hash '{manifest.base_model_hash}' != worker base model " \
           "hash 'ffff'" in message
    assert "adapter prompt version '0' != worker prompt version '1'" in message


def test_cli_publish_list_promote_rollback(
    redis_db: redis.Redis, redis_url: str, adapter_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiqu.cli import main

    monkeypatch.setenv("TIQU_CACHE_DIR", str(tmp_path / "cache"))

    def tiqu(*args: str) -> tuple[int, str]:
        code = main(["--redis-url", redis_url, "adapters", *args])
        return code, capsys.readouterr().out

    assert tiqu("publish", str(adapter_dir)) == (0, "v1\n")
    assert tiqu("publish", str(adapter_dir), "--version", "v2") == (0, "v2\n")
    code, out = tiqu("promote", "v2", "--reason", "try it", "--timeout-s", "0.5")
    assert code == 0 and "promote  - -> v2  (try it)" in out
    code, out = tiqu("list")
    lines = out.splitlines()
    assert lines[0].startswith("  none") and lines[2].startswith("* v2")
    assert lines[1].startswith("  v1") and "field_exact=0.5" in lines[1]
    code, out = tiqu("rollback", "--no-broadcast")
    assert code == 0 and "rollback v2 -> none" in out
    code, out = tiqu("history")
    assert len(out.splitlines()) == 2
    code, out = tiqu("show", "v1")
    assert json.loads(out)["manifest"]["version"] == "v1"
    assert main(["--redis-url", redis_url, "adapters", "show", "v7"]) == 1


# --- the adapter folded into the base weights while it serves ----------------------

MERGE_TEXTS = ["王五，广州市天河区体育西路1号，快递丢件，要求赔偿。",
               "张三 zhang@example.com 电费多扣了两百元", "物业不修电梯"]


def test_folded_adapter_answers_as_the_unfolded_one_and_swaps_restore_the_base_exactly(
        tiny_model: Path, tmp_path: Path) -> None:
    import torch

    from inference.engine import Engine

    v1 = make_adapter(tiny_model, tmp_path / "v1", "v1", seed=1) / "adapter"
    v2 = make_adapter(tiny_model, tmp_path / "v2", "v2", seed=2) / "adapter"
    plain = Engine(Settings(base_model=str(tiny_model), dtype="float32", merge_adapter=False))
    folded = Engine(Settings(base_model=str(tiny_model), dtype="float32"))
    base = {k: v.clone() for k, v in folded.model.state_dict().items()}
    base_answers = folded.extract_batch(MERGE_TEXTS)

    for version, path in (("v1", v1), ("v2", v2)):
        plain.load_adapter(str(path), version=version)
        folded.load_adapter(str(path), version=version)
        assert folded._pristine and not plain._pristine  # folded, and not the other
        ids = plain.tokenizer(MERGE_TEXTS[0], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            want, got = plain.model(ids).logits, folded.model(ids).logits
        assert torch.allclose(want, got, atol=1e-4)
        assert [(o.complaint, o.new_tokens) for o in folded.extract_batch(MERGE_TEXTS)] == [
            (o.complaint, o.new_tokens) for o in plain.extract_batch(MERGE_TEXTS)]

    folded.use_base()
    restored = folded.model.state_dict()
    assert set(restored) == set(base)
    assert all(torch.equal(restored[k], base[k]) for k in base)  # bit for bit, after 2 swaps
    assert [(o.complaint, o.new_tokens) for o in folded.extract_batch(MERGE_TEXTS)] == [
        (o.complaint, o.new_tokens) for o in base_answers]


def test_a_failed_load_leaves_the_old_adapter_folded_and_serving(
        tiny_model: Path, tmp_path: Path) -> None:
    from inference.engine import Engine

    v1 = make_adapter(tiny_model, tmp_path / "v1", "v1", seed=1) / "adapter"
    engine = Engine(Settings(base_model=str(tiny_model), dtype="float32"))
    engine.load_adapter(str(v1), version="v1")
    before = [(o.complaint, o.new_tokens) for o in engine.extract_batch(MERGE_TEXTS)]
    with pytest.raises(ModelNotFound, match="is not a folder"):
        engine.load_adapter(str(tmp_path / "missing"), version="v2")
    broken = tmp_path / "broken"  # passes the folder check, fails inside peft
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((v1 / "adapter_config.json").read_bytes())
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(Exception):  # noqa: B017 - whatever peft raises, v1 must stay
        engine.load_adapter(str(broken), version="v2")
    assert engine.adapter_version == "v1" and engine._pristine
    assert [(o.complaint, o.new_tokens) for o in engine.extract_batch(MERGE_TEXTS)] == before
