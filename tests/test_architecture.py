"""The structure the rooms rely on: import contracts, configs written once, one scorer.

No model and no Redis: these tests read configs, parsers and the import graph.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.validation import same_field
from tests.conftest import ROOT
from trainer import cli
from trainer.config import INTEGRATIONS, TrainConfig
from trainer.synth import FAMILIES, LAYOUTS, SynthConfig, generate, synth_records

# --- import contracts -------------------------------------------------------------


def test_import_contracts_hold() -> None:
    """The .importlinter contracts: rooms layered, producer free of torch, no cycles."""
    pytest.importorskip("importlinter")
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports is not installed next to this interpreter"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_synth_is_a_package_of_families() -> None:
    assert not (ROOT / "trainer" / "synth.py").exists()
    assert set(FAMILIES) == {"default", "plain", "extended"}
    assert set(LAYOUTS) == {"email_body", "narrative", "contact_last", "form_table"}


# --- TrainConfig, written once ------------------------------------------------------


def _train_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tiqu")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    return parser.parse_args(["train", "--data", "x.jsonl", *argv])


def test_cli_options_are_the_config_fields() -> None:
    assert cli.train_config(_train_args()) == TrainConfig()
    parser = argparse.ArgumentParser()
    cli.config_options(parser)
    options = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings[:1]
               != ["-h"]}
    assert set(options) == set(TrainConfig.model_fields)
    # every flag the command had before the options were derived
    for flag in ("--r", "--alpha", "--dropout", "--lr", "--epochs", "--max-steps",
                 "--max-train-s", "--batch-size", "--grad-accum", "--max-len", "--warmup",
                 "--eval-every", "--eval-loss-rows", "--save-every", "--save-every-s",
                 "--eval-limit", "--eval-batch-size", "--seed", "--layers", "--decoding",
                 "--dtype", "--report-to", "--gradient-checkpointing", "--no-cache-prefix",
                 "--resume", "--keep-checkpoints", "--no-progress"):
        assert flag in options.values(), flag
    config = cli.train_config(_train_args(
        "--r", "4", "--layers", "top2", "--no-progress", "--no-cache-prefix", "--resume",
        "--decoding", "schema", "--report-to", "none"))
    assert config == TrainConfig(r=4, layers=[-2, -1], progress=False, cache_prefix=False,
                                 resume=True, decoding="schema", report_to="none")
    with pytest.raises(SystemExit):
        _train_args("--dtype", "float16")


def test_config_round_trips_and_derives_the_lora_spec() -> None:
    config = TrainConfig(r=4, alpha=8, dropout=0.0, layers=[-1], max_steps=3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.replace(resume=True).resume and not config.resume
    with pytest.raises(ConfigError, match="r must be >= 1"):
        config.replace(r=0)
    spec = config.lora_spec(["q_proj"], [3])
    assert (spec.r, spec.alpha, spec.dropout, spec.target_modules, spec.layers) == (
        4, 8, 0.0, ["q_proj"], [3])


def test_report_to_takes_what_the_trainer_takes() -> None:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(INTEGRATIONS) == set(INTEGRATION_TO_CALLBACK)
    for value in ("none", "all", [], ["none"]):
        assert TrainConfig(report_to=value).report_to == value
    assert TrainConfig().trainer_report_to() == "none"
    with pytest.raises(ConfigError, match="report_to 'nowhere' is not one of"):
        TrainConfig(report_to=["nowhere"])
    missing = next(n for n, mods in INTEGRATIONS.items()
                   if not any(find_spec(m) for m in mods))
    with pytest.raises(ConfigError, match=f"report_to '{missing}' is not installed"):
        TrainConfig(report_to=missing)


# --- SynthConfig ----------------------------------------------------------------------


def test_synth_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as err:
        SynthConfig(plain=True, extended=True, rare_names=False, unlabelled=0.5)
    assert "exclude each other" in str(err.value) and "unlabelled must be a share" in str(err.value)
    with pytest.raises(ValueError, match="share"):
        SynthConfig(unlabelled=-0.1)
    config = SynthConfig(seed=3, extended=True, rare_names=True)
    assert generate(20, config) == synth_records(20, 3, extended=True, rare_names=True)


# --- field exact, one meaning ------------------------------------------------------------


def test_field_exact_folds_width_and_whitespace_everywhere() -> None:
    from tiqu.bench_report import field_exact
    from trainer.evaluate import same

    assert same is same_field
    assert same_field("ＡＢ 12", "AB  12") and same_field(None, None)
    assert not same_field("AB", None) and not same_field("AB", "ABC")
    gold = {"name": "张三", "address": None, "email": "a@b.cn", "question": "退款。"}
    wide = {**gold, "email": "ａ@ｂ.cn", "question": " 退款。 "}
    assert field_exact([wide], [gold]) == 1.0
