"""The shipped adapter: which adapter an engine serves at start, and ``tiqu adapters pack``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.adapter_stores import verify_files
from core.errors import ConfigError
from core.manifest import Manifest, sha256_file
from core.settings import DEFAULT_MODEL, Settings
from inference import models
from inference.models import NO_ADAPTER, SHIPPED_ADAPTER, serving_adapter
from tests.test_adapters import make_adapter
from tiqu.pack import pack


def test_the_default_model_serves_the_shipped_adapter_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    shipped = tmp_path / "shipped" / DEFAULT_MODEL
    (shipped / "adapter").mkdir(parents=True)
    monkeypatch.setattr(models, "SHIPPED_ADAPTER", shipped)
    assert serving_adapter(Settings()) is None  # no weights: nothing to serve
    (shipped / "adapter/adapter_model.safetensors").write_bytes(b"x")
    assert serving_adapter(Settings()) == str(shipped / "adapter")
    assert serving_adapter(Settings(adapter=NO_ADAPTER)) is None
    assert serving_adapter(Settings(adapter="/srv/mine")) == "/srv/mine"
    assert serving_adapter(Settings(base_model="Qwen/Qwen3-0.6B")) is None  # not its base


def test_the_shipped_adapter_is_in_the_repository_small_and_checked() -> None:
    manifest = Manifest.load(SHIPPED_ADAPTER)
    weights = SHIPPED_ADAPTER / "adapter" / "adapter_model.safetensors"
    assert weights.stat().st_size <= 5 * 1024 * 1024
    assert manifest.files["adapter_model.safetensors"] == sha256_file(weights)
    assert manifest.base_model == DEFAULT_MODEL
    assert manifest.packed["dtype"] == "bfloat16"  # type: ignore[attr-defined]
    assert set(manifest.calibration) == {"name", "address", "email", "question"}
    config = json.loads((SHIPPED_ADAPTER / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEFAULT_MODEL  # a name, no local folder


def test_pack_halves_the_weights_and_the_engine_serves_the_copy(
    tiny_model: Path, tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    from inference.engine import Engine

    run = make_adapter(tiny_model, tmp_path / "run", "v1", seed=1)
    packed = pack(run, tmp_path / "packed")
    before = load_file(str(run / "adapter/adapter_model.safetensors"))
    after = load_file(str(tmp_path / "packed/adapter/adapter_model.safetensors"))
    assert after.keys() == before.keys()
    assert all(str(t.dtype) == "torch.bfloat16" for t in after.values())
    assert all((after[k].float() - v).abs().max() <= v.abs().max() / 128 for k, v in
               before.items())  # bf16 keeps 8 bits of mantissa
    info = packed.packed  # type: ignore[attr-defined]
    config = json.loads((tmp_path / "packed/adapter/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == packed.base_model
    assert info["bytes_after"] < 0.6 * info["bytes_before"]
    verify_files(tmp_path / "packed/adapter", Manifest.load(tmp_path / "packed").files, "v1")
    assert sorted(p.name for p in (tmp_path / "packed").rglob("*") if p.is_file()) == [
        "adapter_config.json", "adapter_model.safetensors", "manifest.json"]
    engine = Engine(Settings(base_model=str(tiny_model), dtype="float32",
                             adapter=str(tmp_path / "packed/adapter")))
    assert engine.adapter_version == "local"
    with pytest.raises(ConfigError, match="not empty"):
        pack(run, tmp_path / "packed")


def test_eval_calibrate_fits_the_maps_on_its_rows_and_writes_them_into_the_manifest(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiqu.cli import main
    from trainer.data import save_records, synth_records

    run = make_adapter(tiny_model, tmp_path / "run", "v1", seed=1)
    assert Manifest.load(run).calibration == {}
    data = tmp_path / "rows.jsonl"
    save_records(synth_records(24, seed=9), data, "gold")
    monkeypatch.setenv("TIQU_BASE_MODEL", str(tiny_model))
    monkeypatch.setenv("TIQU_DTYPE", "float32")
    assert main(["eval", "--data", str(data), "--adapter", str(run), "--calibrate",
                 "--no-progress"]) == 0
    manifest = Manifest.load(run)
    assert set(manifest.calibration) == {"name", "address", "email", "question"}
    assert manifest.calibrated_on == {"data": "rows.jsonl", "rows": 24}  # type: ignore[attr-defined]
    assert main(["eval", "--data", str(data), "--calibrate", "--no-progress",
                 "--adapter", str(run / "adapter")]) == 1  # not a run folder: refused
