"""LoRA fine-tuning with peft and the transformers Trainer, and the run folder it writes.

A run folder ``DIR`` ends up holding exactly:

- ``adapter/``: the peft files (``adapter_config.json``, ``adapter_model.safetensors``);
- ``eval.json``: scores of the trained adapter on the held-out test split
  (with copy decoding, the raw field confidences' risk-coverage and
  calibration too);
- ``loss.png``: train and eval loss against the step;
- ``risk_coverage.png``: precision against coverage of the raw confidences
  (copy decoding only);
- ``manifest.json``: a :class:`core.manifest.Manifest`, written last, so its
  presence marks a finished run. Its ``calibration`` holds, per field with
  enough scored rows, the isotonic map from raw confidence to P(field exact)
  fitted on the same rows (trainer.calibrate); workers serving the adapter
  apply it.

While training, ``DIR/checkpoints/`` holds resumable checkpoints; they are
removed when the run finishes unless ``keep_checkpoints`` is set. Heavy
libraries are imported inside functions; :class:`TrainConfig` lives in
trainer.config, so code that never trains (the CLI's ``--submit``, the task
request) need not import this module.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError, DataError
from core.manifest import ADAPTER_DIRNAME, Manifest, hash_folder
from core.settings import Settings
from trainer.config import Progress, TrainConfig, train_dtype
from trainer.data import Record, data_hash, split_records
from trainer.retrain import Retrain, mix, warm_start
from trainer.sft import encode_records, fit

__all__ = ["TrainConfig", "add_lora", "resolve_layers", "train", "train_dtype"]

log = logging.getLogger("tiqu.train")

CHECKPOINTS = "checkpoints"
RUN_STATE = "run.json"


def new_version() -> str:
    """A sortable, unique adapter version: ``YYYYmmdd-HHMMSS-<6 hex>`` (UTC)."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def resolve_layers(layers: Sequence[int] | None, n_layers: int) -> list[int] | None:
    """Layer indices counted from 0; negative ones count from the top. Raises on out-of-range."""
    if layers is None:
        return None
    bad = [i for i in layers if not -n_layers <= i < n_layers]
    if bad:
        raise ConfigError(f"layers {bad} out of range for a model with {n_layers} layers")
    return sorted(i % n_layers for i in layers)


# --- the run folder -------------------------------------------------------------


def check_out_dir(out_dir: Path, resume: bool) -> bool:
    """Whether to resume from ``out_dir/checkpoints``; raises if the folder can't be used.

    A fresh run needs an absent or empty folder; a finished run (``manifest.json``)
    is never overwritten.
    """
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise ConfigError(f"output {out_dir} exists and is not a folder")
    entries = sorted(p.name for p in out_dir.iterdir())
    if "manifest.json" in entries:
        raise ConfigError(f"output folder {out_dir} holds a finished run; pick another folder")
    has_ckpt = any((out_dir / CHECKPOINTS).glob("checkpoint-*"))
    if resume and has_ckpt:
        return True
    if entries and entries != [CHECKPOINTS]:
        raise ConfigError(f"output folder {out_dir} is not empty: {entries[:5]}")
    if has_ckpt:
        raise ConfigError(
            f"output folder {out_dir} holds checkpoints of an unfinished run; "
            "resume it (--resume) or pick another folder"
        )
    if resume:
        log.warning("no checkpoint in %s to resume from; starting a fresh run", out_dir)
    return False


def _run_state(out_dir: Path, resuming: bool, digest: str, config: TrainConfig) -> str:
    """The run's version; a resumed run keeps its version and must use the same data."""
    path = out_dir / CHECKPOINTS / RUN_STATE
    if resuming and path.exists():
        state = json.loads(path.read_text())
        if state["data_hash"] != digest:
            raise ConfigError(
                f"resume data hash {digest[:12]} != checkpoint data hash {state['data_hash'][:12]}"
            )
        return str(state["version"])
    version = new_version()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"version": version, "data_hash": digest, "config": config.to_dict()}
    path.write_text(json.dumps(state))
    return version


# --- model and trainer ----------------------------------------------------------


def load_for_training(settings: Settings, config: TrainConfig) -> tuple[Any, Any, str, str]:
    """``(model, tokenizer, source, device)`` with the base weights in the training dtype."""
    from inference.models import load_base, pick_device

    device = pick_device(settings)
    dtype = train_dtype(config, device)
    model, tok, source = load_base(settings.model_copy(update={"dtype": dtype, "adapter": None}))
    return model, tok, source, device


def linear_names(model: Any) -> list[str]:
    """Leaf names of the model's linear layers, the output head excluded ("all-linear")."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def add_lora(model: Any, config: TrainConfig) -> tuple[Any, list[int] | None, list[str] | str]:
    """Wrap ``model`` with fresh LoRA weights; returns it, the layers and the target modules."""
    import torch
    from peft import LoraConfig, get_peft_model

    layers = resolve_layers(config.layers, int(model.config.num_hidden_layers))
    targets = config.target_modules
    if layers is not None and targets == "all-linear":
        targets = linear_names(model)  # peft takes a layer subset only with explicit names
    torch.manual_seed(config.seed)  # LoRA A is random: same seed, same start
    spec = LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=targets, layers_to_transform=layers, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, spec), layers, targets


# --- the run --------------------------------------------------------------------


def encode_splits(tok: Any, splits: dict[str, list[Record]], config: TrainConfig) -> Any:
    """Encoded ``(train, val)``; raises :class:`DataError` when no training row is left."""
    train_set = encode_records(tok, splits["train"], config.max_len)
    val_set = encode_records(tok, splits["val"][: config.eval_loss_rows], config.max_len)
    if not train_set.examples:
        raise DataError(
            f"no training rows: the train split has {len(splits['train'])} rows and "
            f"{train_set.dropped} are longer than max_len {config.max_len} tokens"
        )
    if train_set.dropped:
        log.warning("dropped %d of %d training rows longer than max_len %d (longest %d)",
                    train_set.dropped, len(splits["train"]), config.max_len, train_set.longest)
    return train_set, val_set


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    return next((float(e[key]) for e in reversed(history) if key in e), None)


def finish_checkpoints(out_dir: Path, keep: bool) -> None:
    """Remove checkpoints and the run state unless ``keep``; other logs stay."""
    folder = out_dir / CHECKPOINTS
    if keep or not folder.exists():
        return
    for ckpt in folder.glob("checkpoint-*"):
        shutil.rmtree(ckpt)
    (folder / RUN_STATE).unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def write_outputs(settings: Settings, model: Any, tok: Any, trainer: Any, rows: list[Record],
                  config: TrainConfig, out_dir: Path, version: str
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``adapter/``, ``eval.json`` (scores of ``rows``), ``loss.png`` and, with copy
    decoding, ``risk_coverage.png``; returns the scores and the calibration maps
    fitted on the rows' field confidences."""
    from trainer.calibrate import fit_fields, plot_risk_coverage
    from trainer.evaluate import evaluate_model
    from trainer.plots import plot_loss

    adapter = out_dir / ADAPTER_DIRNAME
    model.save_pretrained(adapter)
    (adapter / "README.md").unlink(missing_ok=True)  # peft's boilerplate model card
    pairs: dict[str, list[tuple[float, bool]]] = {}
    scores = evaluate_model(settings, model, tok, rows, config.decoding, config.eval_batch_size,
                            version, config.progress, pairs=pairs) if rows else {}
    (out_dir / "eval.json").write_text(json.dumps(scores, ensure_ascii=False, indent=1))
    plot_loss(trainer.state.log_history, out_dir / "loss.png", title=f"LoRA {version}")
    if pairs:
        plot_risk_coverage(pairs, out_dir / "risk_coverage.png", title=f"LoRA {version} (raw)")
    return scores, fit_fields(pairs)


def last_checkpoint_step(ckpt_dir: Path) -> int:
    """The step of the newest complete checkpoint in ``ckpt_dir`` (0 when there is none).

    A checkpoint folder without ``trainer_state.json`` (the Trainer writes it last)
    was cut short by a kill and is removed, so resuming never loads half of one.
    """
    steps = []
    for path in ckpt_dir.glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[1]
        if not (path / "trainer_state.json").is_file():
            log.warning("removing incomplete checkpoint %s", path.name)
            shutil.rmtree(path, ignore_errors=True)
        elif step.isdigit():
            steps.append(int(step))
    return max(steps, default=0)


def train(settings: Settings, records: list[Record], out_dir: Path, config: TrainConfig,
          on_progress: Progress | None = None, source: str | None = None,
          run_id: str | None = None, retrain: Retrain | None = None) -> Manifest:
    """Fine-tune LoRA on the train split, score it on the test split, write the run folder.

    With ``retrain`` (trainer.retrain) the run starts from the parent adapter's weights,
    trains on ``records`` mixed with the corrections' train part, and scores parent and
    child on the gate part and the synthetic test split; the manifest records both.

    The output folder, the data and the config are all checked before anything is
    written. ``on_progress`` receives ``{"phase", "step", "total", "loss"}``.
    ``run_id`` (the task id of a queued run) is kept in the manifest as ``task_id``;
    a resumed run records the step it resumed from as ``timings.resumed_from_step``.
    """
    from inference.models import model_fingerprint

    report: Progress = on_progress or (lambda meta: None)
    clock = [time.perf_counter()]
    resuming = check_out_dir(out_dir, config.resume)
    splits = split_records(records)
    if retrain is not None:
        config = retrain.adjust(config)
        splits["train"] = mix(splits["train"], retrain.train_part, retrain.share)
    report({"phase": "load", "step": 0, "total": 0, "loss": None})
    model, tok, base_source, device = load_for_training(settings, config)
    sets = encode_splits(tok, splits, config)
    clock.append(time.perf_counter())
    digest = data_hash([*records, *(retrain.corrections if retrain else [])])
    version = _run_state(out_dir, resuming, digest, config)
    resumed_from = last_checkpoint_step(out_dir / CHECKPOINTS) if resuming else 0
    resuming = resumed_from > 0
    if resuming:
        log.info("resuming run %s from step %d", version, resumed_from)
    if retrain is None:
        model, layers, targets = add_lora(model, config)
    else:
        model, layers, targets = warm_start(model, retrain.parent)
        report({"phase": "gate", "step": 0, "total": 0, "loss": None})
        retrain.score_parent(settings, model, tok, splits["test"][: config.eval_limit], config)
    trainer, cache = fit(model, tok, sets, config, out_dir / CHECKPOINTS, device, report,
                         resuming, layers)
    clock.append(time.perf_counter())
    steps, history = trainer.state.global_step, trainer.state.log_history
    report({"phase": "eval", "step": steps, "total": steps, "loss": _last(history, "loss")})
    rows = (splits["test"] or splits["val"])[: config.eval_limit]
    scores, calibration = write_outputs(settings, model, tok, trainer, rows, config, out_dir,
                                        version)
    clock.append(time.perf_counter())
    extra: dict[str, Any] = {"config": config.to_dict()}  # an extra field: hyper-parameters
    if retrain is not None:
        report({"phase": "gate", "step": steps, "total": steps, "loss": None})
        synthetic = scores.get("overall", {}).get("field_exact") if splits["test"] else None
        extra.update(retrain.score_child(settings, model, tok, config, synthetic))
    if run_id is not None:
        extra["task_id"] = run_id
    manifest = Manifest(
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        base_model=settings.base_model,
        base_model_hash=model_fingerprint(base_source),
        lora=config.lora_spec(targets, layers),
        data={"hash": digest, "source": source, "rows": len(records),
              "corrections": len(retrain.corrections) if retrain else 0,
              **{s: len(v) for s, v in splits.items()}, "dropped": sets[0].dropped,
              "max_len": config.max_len, "train_tokens": sets[0].tokens},
        metrics={"train_loss": _last(history, "loss"), "eval_loss": _last(history, "eval_loss"),
                 "eval_rows": len(rows), **scores.get("overall", {})},
        timings={**_timings(clock, steps, device, train_dtype(config, device)),
                 "prefix_cache_s": round(cache.build_s, 2) if cache else None,
                 "resumed_from_step": resumed_from},
        files=hash_folder(out_dir / ADAPTER_DIRNAME),
        calibration=calibration,
        **extra,
    )
    finish_checkpoints(out_dir, config.keep_checkpoints)
    manifest.save(out_dir)
    report({"phase": "done", "step": steps, "total": steps, "loss": manifest.metrics["train_loss"]})
    return manifest


def _timings(clock: list[float], steps: int, device: str, dtype: str) -> dict[str, Any]:
    start, loaded, trained, end = clock
    return {"load_s": round(loaded - start, 2), "train_s": round(trained - loaded, 2),
            "eval_s": round(end - trained, 2), "total_s": round(end - start, 2), "steps": steps,
            "s_per_step": round((trained - loaded) / max(steps, 1), 3),
            "device": device, "dtype": dtype}
