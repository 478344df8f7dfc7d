"""Retraining from the serving adapter on an operator's corrections, and its gate.

``tiqu train --data synth.jsonl --data corrections.jsonl --from-adapter VERSION``:

- rows tagged ``correction`` (what ``tiqu data corrections`` exports) are split by
  :func:`gate_split` into a train part and a gate part. The split hashes each text
  on its own, so it is stable as corrections grow: a gate row never moves into
  training, and a new correction never moves an old one;
- the train part is repeated until it makes ``share`` of the training rows
  (:func:`mix`); the other rows (the replayed synthetic data) go through the usual
  hash split, so the synthetic test split stays the one the parent was scored on;
- training starts from the parent adapter's weights (:func:`warm_start`), with its
  rank, alpha, target modules and layers;
- before the first step and after the last, the model is scored on the gate part
  and on the synthetic test split (:func:`score`). :func:`decide` passes the new
  adapter when it beats the parent on the gate and loses at most ``max_synth_drop``
  field exact on the synthetic test split. The manifest records the parent, both
  pairs of scores and the decision; ``--promote-if-better`` promotes only a pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, DataError
from core.validation import normalize
from trainer.config import TrainConfig
from trainer.records import Record

log = logging.getLogger("tiqu.retrain")

CORRECTION_TAG = "correction"
#: Share of the corrections held out for the gate.
GATE_SHARE = 0.3
#: Share of the training rows that are (repeated) corrections.
CORRECTION_SHARE = 0.5
#: Field exact the new adapter may lose on the synthetic test split (a fraction).
MAX_SYNTH_DROP = 0.01
_SALT = b"tiqu-gate:"


def is_correction(record: Record) -> bool:
    return CORRECTION_TAG in record.tags


def in_gate(text: str, share: float = GATE_SHARE) -> bool:
    """Whether a correction's text belongs to the gate part: a salted sha256 of its
    normalised form, so the choice depends on the text alone (and differs from the
    train/val/test split of trainer.data)."""
    digest = hashlib.sha256(_SALT + normalize(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def gate_split(corrections: Sequence[Record], share: float = GATE_SHARE
               ) -> tuple[list[Record], list[Record]]:
    """``(train, gate)``: each correction by :func:`in_gate`, order kept."""
    train: list[Record] = []
    gate: list[Record] = []
    for r in corrections:
        (gate if in_gate(r.text, share) else train).append(r)
    return train, gate


def mix(replay: Sequence[Record], corrections: Sequence[Record], share: float
        ) -> list[Record]:
    """``replay`` with ``corrections`` repeated whole until they make about ``share`` of
    the rows (at least once each), the copies spread through the replayed rows."""
    if not corrections:
        return list(replay)
    if not replay:
        return list(corrections)
    copies = max(1, round(share * len(replay) / ((1 - share) * len(corrections))))
    repeated = [r for _ in range(copies) for r in corrections]
    out: list[Record] = []
    step = len(replay) / len(repeated)
    # interleave: the i-th repeated row goes after about i*step replayed rows
    j = 0
    for i, r in enumerate(repeated):
        while j < min(len(replay), math.floor((i + 1) * step)):
            out.append(replay[j])
            j += 1
        out.append(r)
    out.extend(replay[j:])
    return out


@dataclass
class Retrain:
    """What a warm-started run needs besides its data: the parent and the corrections."""

    parent: Path  # the parent's peft folder
    parent_version: str
    corrections: list[Record]
    share: float = CORRECTION_SHARE
    gate_share: float = GATE_SHARE
    max_synth_drop: float = MAX_SYNTH_DROP
    train_part: list[Record] = field(init=False)
    gate_part: list[Record] = field(init=False)
    synthetic: list[Record] = field(init=False, default_factory=list)
    parent_scores: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.share < 1:
            raise ConfigError(f"correction share must be in (0, 1), got {self.share}")
        self.train_part, self.gate_part = gate_split(self.corrections, self.gate_share)
        if not self.train_part or not self.gate_part:
            raise DataError(
                f"{len(self.corrections)} corrections split into {len(self.train_part)} to "
                f"train on and {len(self.gate_part)} for the gate; a retrain needs both "
                "(collect more corrections)")

    def score_parent(self, settings: Any, model: Any, tok: Any, synthetic: list[Record],
                     config: TrainConfig) -> dict[str, float]:
        """Score the warm-started model (still the parent) on the gate part and the
        synthetic test rows ``synthetic``, before the first step."""
        self.synthetic = synthetic
        self.parent_scores = score(settings, model, tok, {"gate": self.gate_part,
                                                          "synthetic": synthetic}, config)
        return self.parent_scores

    def score_child(self, settings: Any, model: Any, tok: Any, config: TrainConfig,
                    synthetic: float | None = None) -> dict[str, Any]:
        """The manifest's ``parent`` and ``gate`` after training. ``synthetic``: the
        trained model's field exact on the same synthetic rows when already scored
        (the run's own final eval), so they are not decoded twice."""
        sets = {"gate": self.gate_part}
        if synthetic is None:
            sets["synthetic"] = self.synthetic
        new = score(settings, model, tok, sets, config)
        if synthetic is not None:
            new["synthetic"] = round(float(synthetic), 4)
        passed, why = decide(self.parent_scores, new, self.max_synth_drop)
        return {"parent": self.parent_version,
                "gate": {"parent": self.parent_scores, "new": new, "passed": passed,
                         "reason": why, "gate_rows": len(self.gate_part),
                         "correction_rows": len(self.train_part), "share": self.share}}

    def lora(self) -> dict[str, Any]:
        """The parent's rank, alpha, target modules and layers (its adapter_config.json)."""
        try:
            spec = json.loads((self.parent / "adapter_config.json").read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"parent adapter {self.parent}: no readable "
                              f"adapter_config.json ({err})") from err
        targets = spec.get("target_modules")
        return {"r": int(spec["r"]), "alpha": int(spec["lora_alpha"]),
                "target_modules": sorted(targets) if isinstance(targets, list) else targets,
                "layers": spec.get("layers_to_transform")}

    def adjust(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the parent's LoRA shape (a warm start cannot change it)."""
        shape = self.lora()
        changed = {k: (getattr(config, k), v) for k, v in shape.items()
                   if getattr(config, k) != v}
        if changed:
            log.info("warm start keeps the parent's LoRA shape: %s",
                     ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        return config.replace(**shape)


def warm_start(model: Any, folder: Path) -> tuple[Any, list[int] | None, list[str] | str]:
    """``model`` wrapped with the trainable LoRA weights of ``folder``; returns it, the
    layers and the target modules, as :func:`trainer.lora.add_lora` does."""
    from peft import PeftModel

    wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    spec: Any = wrapped.peft_config["default"]  # a LoraConfig
    layers = spec.layers_to_transform
    layers = sorted(layers) if isinstance(layers, list) else layers
    targets = spec.target_modules
    return wrapped, layers, sorted(targets) if isinstance(targets, set | list) else targets


def score(settings: Any, model: Any, tok: Any, sets: dict[str, list[Record]],
          config: TrainConfig) -> dict[str, float]:
    """Field exact of ``model`` on each named set (empty sets are left out)."""
    from trainer.evaluate import evaluate_model

    out = {}
    for name, rows in sets.items():
        if rows:
            report = evaluate_model(settings, model, tok, rows, config.decoding,
                                    config.eval_batch_size, progress=config.progress)
            out[name] = round(float(report["overall"]["field_exact"]), 4)
    model.train()
    return out


def decide(parent: dict[str, float], new: dict[str, float],
           max_synth_drop: float = MAX_SYNTH_DROP) -> tuple[bool, str]:
    """Whether the new adapter passes the gate, and why in words."""
    gate_gain = new["gate"] - parent["gate"]
    if gate_gain <= 0:
        return False, (f"gate field exact {new['gate']:.3f} does not beat the parent's "
                       f"{parent['gate']:.3f}")
    if "synthetic" in parent and "synthetic" in new:
        drop = parent["synthetic"] - new["synthetic"]
        if drop > max_synth_drop:
            return False, (f"synthetic test field exact fell {drop:.3f} "
                           f"({parent['synthetic']:.3f} -> {new['synthetic']:.3f}), "
                           f"more than {max_synth_drop:.3f}")
    return True, (f"gate field exact {parent['gate']:.3f} -> {new['gate']:.3f}; synthetic "
                  f"{parent.get('synthetic', float('nan')):.3f} -> "
                  f"{new.get('synthetic', float('nan')):.3f}")


# --- the parent and the promotion -----------------------------------------------


def resolve_parent(settings: Any, from_adapter: str, local: bool = True) -> tuple[Path, str]:
    """``(peft folder, version)`` of the adapter to start from: a local run or adapter
    folder (only when ``local``: never for a queued request), ``active`` (the serving
    version) or a published version, fetched and checked by the registry."""
    from core.adapters import Registry
    from core.manifest import MANIFEST_NAME, Manifest
    from trainer.evaluate import adapter_folder

    folder = Path(from_adapter)
    if local and folder.is_dir():
        run = folder if (folder / MANIFEST_NAME).is_file() else folder.parent
        version = (Manifest.load(run).version if (run / MANIFEST_NAME).is_file()
                   else folder.name)
        return adapter_folder(folder), version
    registry = Registry.from_settings(settings)
    chosen = registry.active() if from_adapter == "active" else from_adapter
    if chosen is None:
        raise ConfigError("--from-adapter active: no adapter is active in the registry")
    return registry.fetch(chosen), chosen


def split_rows(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """``(replay, corrections)``: rows tagged ``correction`` apart from the rest."""
    corrections = [r for r in records if is_correction(r)]
    return [r for r in records if not is_correction(r)], corrections


def publish_and_gate(settings: Any, run_dir: Path, promote: bool) -> dict[str, Any]:
    """Publish the finished run and, when ``promote`` and its gate passed, promote it.
    Returns ``{version, passed, promoted, reason}``."""
    from core.adapters import Registry
    from core.manifest import Manifest

    manifest = Manifest.load(run_dir)
    gate = getattr(manifest, "gate", None) or {}
    registry = Registry.from_settings(settings)
    registry.publish(run_dir)
    passed = bool(gate.get("passed"))
    promoted = promote and passed
    if promoted:
        registry.promote(manifest.version, "retrain gate: " + str(gate.get("reason", "")))
    return {"version": manifest.version, "passed": passed, "promoted": promoted,
            "reason": gate.get("reason", "no gate (not a retrain)")}


#: The recipe of a retrain from the review page or ``make retrain``: few steps from the
#: serving adapter (its rank and layers are kept), replaying REPLAY_ROWS synthetic rows.
RETRAIN_CONFIG: dict[str, Any] = {
    "max_steps": 100, "lr": 3e-4, "batch_size": 8, "max_len": 1024, "dropout": 0.0,
    "eval_every": 50, "eval_loss_rows": 16, "eval_limit": 64, "warmup": 0.1,
}
REPLAY_ROWS = 300


def queued_request() -> dict[str, Any]:
    """The ``tiqu.train`` request of a retrain on the stored corrections, warm-started
    from the active adapter, promoted if it passes the gate."""
    return {"synth_rows": REPLAY_ROWS, "from_adapter": "active", "corrections": True,
            "promote_if_better": True, "config": TrainConfig(**RETRAIN_CONFIG).to_dict()}
