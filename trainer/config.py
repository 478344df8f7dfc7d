"""The hyper-parameters of one training run, written once: the CLI options, the task
request and the manifest's LoRA spec all come from :class:`TrainConfig`.

This module imports nothing above core and no heavy library (torch is imported inside
:func:`train_dtype` only), so code that never trains (the CLI's ``--submit``, the task
request) can build and check a config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.util import find_spec
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.manifest import LoraSpec

#: Receives ``{"phase", "step", "total", "loss"}`` as training advances.
Progress = Callable[[dict[str, Any]], None]

#: The transformers Trainer's reporting integrations (``report_to``) and the modules
#: that make each one available; tests compare the names with transformers' own list.
INTEGRATIONS: dict[str, tuple[str, ...]] = {
    "azure_ml": ("azureml",), "comet_ml": ("comet_ml",), "mlflow": ("mlflow",),
    "neptune": ("neptune",), "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",), "wandb": ("wandb",), "codecarbon": ("codecarbon",),
    "clearml": ("clearml",), "dagshub": ("dagshub",), "flyte": ("flytekit",),
    "dvclive": ("dvclive",), "swanlab": ("swanlab",), "kubeflow": ("kubeflow",),
}
#: ``report_to`` values that name no single integration: nothing, or every one installed.
REPORT_ALL, REPORT_NONE = "all", "none"

_LOWER_BOUNDS = (
    ("r", 1), ("alpha", 1), ("batch_size", 1), ("grad_accum", 1), ("max_len", 16),
    ("log_every", 1), ("eval_every", 1), ("save_every", 1), ("eval_batch_size", 1),
    ("eval_loss_rows", 0),
)


def _reporter_problems(report_to: str | list[str]) -> list[str]:
    names = [report_to] if isinstance(report_to, str) else report_to
    if names in ([REPORT_ALL], [REPORT_NONE]):
        return []
    out = []
    for name in names:
        if name not in INTEGRATIONS:
            known = [REPORT_ALL, REPORT_NONE, *INTEGRATIONS]
            out.append(f"report_to {name!r} is not one of {known}")
        elif not any(find_spec(module) for module in INTEGRATIONS[name]):
            out.append(f"report_to {name!r} is not installed (pip install {name})")
    return out


def _describe(err: ValidationError) -> str:
    """Every error of ``err``: ``field: message``, or the consistency problems as they are."""
    out = []
    for e in err.errors():
        ctx = e.get("ctx") or {}
        message = str(ctx["error"]) if e["type"] == "value_error" and "error" in ctx else e["msg"]
        loc = ".".join(map(str, e["loc"]))
        out.append(f"{loc}: {message}" if loc else message)
    return "; ".join(out)


class TrainConfig(BaseModel):
    """Hyper-parameters of one run; building it checks every field and reports all problems.

    ``layers`` puts LoRA only on those decoder layers (peft ``layers_to_transform``);
    negative numbers count from the top, so ``[-4, -3, -2, -1]`` is the top four.
    Backward then stops at the lowest adapted layer, which makes CPU steps cheaper.
    ``max_steps`` (when set) overrides ``epochs``; ``max_train_s`` stops training
    after that many seconds of steps, whatever the step count. Checkpoints are written
    every ``save_every`` steps and, with ``save_every_s``, also once that many seconds
    have passed since the last one, so a killed run loses at most that much work.
    ``eval_limit`` caps the test rows generated for ``eval.json``; ``eval_loss_rows``
    caps the validation rows of the periodic eval loss. ``report_to`` takes what the
    transformers Trainer takes: a list of integration names, one name, ``"all"`` or
    ``"none"``; the empty list reports nowhere.

    Bad values raise :class:`ConfigError` naming every bad field at once.
    """

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, description="LoRA rank")
    alpha: int = Field(32, description="LoRA alpha")
    dropout: float = Field(0.1, description="LoRA dropout")
    target_modules: str | list[str] = Field("all-linear", description="LoRA target modules")
    layers: list[int] | None = Field(None, description="LoRA only on these layers: top4, 20-23")
    lr: float = Field(1e-4, description="learning rate")
    epochs: float = Field(3.0, description="epochs (max_steps overrides)")
    max_steps: int | None = Field(None, description="stop after this many steps")
    max_train_s: float | None = Field(None, description="stop after this many seconds of steps")
    batch_size: int = Field(8, description="rows per step")
    grad_accum: int = Field(1, description="gradient accumulation steps")
    max_len: int = Field(512, description="longer rows are dropped, never truncated")
    warmup: float = Field(0.05, description="warmup, a fraction of the steps")
    weight_decay: float = Field(0.0, description="AdamW weight decay")
    log_every: int = Field(5, description="log the loss every N steps")
    eval_every: int = Field(50, description="eval loss every N steps")
    eval_loss_rows: int = Field(64, description="validation rows of the eval loss")
    save_every: int = Field(50, description="checkpoint every N steps")
    save_every_s: float | None = Field(
        300.0, description="also checkpoint when this long has passed since the last")
    eval_limit: int | None = Field(200, description="test rows scored for eval.json")
    eval_batch_size: int = Field(16, description="rows per batch of the final eval")
    decoding: Literal["copy", "schema", "none"] = Field("copy", description="for the final eval")
    dtype: Literal["auto", "bfloat16", "float32"] = Field("auto", description="base weight dtype")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward")
    trim_logits: bool = Field(
        True, description="output head and loss on answer tokens only (sft.answer_loss)")
    cache_prefix: bool = Field(
        True, description="run the layers below --layers once per row, not at every step")
    group_by_length: bool = Field(True, description="batch rows of similar length")
    report_to: str | list[str] = Field(
        default_factory=list, description="the Trainer's report_to: integration names, all, none")
    seed: int = Field(0, description="random seed")
    resume: bool = Field(False, description="continue from DIR/checkpoints")
    keep_checkpoints: bool = Field(False, description="keep checkpoints after the run")
    progress: bool = Field(True, description="progress bars")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError("invalid training config: " + _describe(err)) from err

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        problems = self.problems()
        if problems:
            # a ValueError here becomes part of the ValidationError that __init__ reports
            raise ValueError("; ".join(problems))
        return self

    def problems(self) -> list[str]:
        """Every inconsistent field, each naming the field and its value."""
        out = [f"{name} must be >= {low}, got {getattr(self, name)}"
               for name, low in _LOWER_BOUNDS if getattr(self, name) < low]
        if self.save_every_s is not None and self.save_every_s <= 0:
            out.append(f"save_every_s must be > 0 or unset, got {self.save_every_s}")
        if not 0 <= self.dropout < 1:
            out.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr < 1:
            out.append(f"lr must be in (0, 1), got {self.lr}")
        if self.epochs <= 0 and not self.max_steps:
            out.append(f"epochs must be > 0 when max_steps is not set, got {self.epochs}")
        if self.max_train_s is not None and self.max_train_s <= 0:
            out.append(f"max_train_s must be > 0 or unset, got {self.max_train_s}")
        if self.max_steps is not None and self.max_steps < 1:
            out.append(f"max_steps must be >= 1 or unset, got {self.max_steps}")
        if not 0 <= self.warmup < 1:
            out.append(f"warmup (a fraction of the steps) must be in [0, 1), got {self.warmup}")
        if self.eval_limit is not None and self.eval_limit < 0:
            out.append(f"eval_limit must be >= 0 or unset, got {self.eval_limit}")
        layers = self.layers
        if layers is not None and (not layers or len(set(layers)) != len(layers)):
            out.append(f"layers must be a non-empty list without repeats, got {self.layers}")
        return out + _reporter_problems(self.report_to)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from plain values; unknown keys are an error, not ignored."""
        known = set(cls.model_fields)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values that :meth:`from_dict` turns back into this config."""
        return self.model_dump()

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, checked like a new config."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def lora_spec(self, targets: str | list[str], layers: list[int] | None) -> LoraSpec:
        """The manifest's LoRA spec: this config's rank, alpha and dropout, with the target
        modules and layer indices that :func:`trainer.lora.add_lora` resolved."""
        return LoraSpec(r=self.r, alpha=self.alpha, dropout=self.dropout,
                        target_modules=targets, layers=layers)

    def trainer_report_to(self) -> str | list[str]:
        """``report_to`` as the transformers Trainer takes it (nothing: ``"none"``)."""
        return self.report_to or REPORT_NONE


def train_dtype(config: TrainConfig, device: str) -> str:
    """The base model's weight dtype; LoRA weights stay float32 (peft upcasts them)."""
    if config.dtype != "auto":
        return config.dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    # Measured (docs/training.md, docs/benchmarks.md): on a CPU without native bf16
    # instructions (AVX2 only) bf16 matrix products run far slower than fp32, so such
    # CPUs train in fp32; with AVX512-BF16 or AMX a bf16 base cuts a step by a quarter.
    from inference.models import cpu_has_fast_bf16

    return "bfloat16" if cpu_has_fast_bf16() else "float32"
