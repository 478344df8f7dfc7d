"""Supervised fine-tuning: examples tokenised through the one prompt builder, and the Trainer.

Each record becomes ``prompt ids + completion ids``, where the prompt is rendered
by :func:`core.prompting.render_training`, which is byte-identical to the
inference prompt, and both parts are tokenised separately without special
tokens, exactly as the engine tokenises its prompt. Labels are ``-100`` on the
prompt, so the loss covers only the answer and its end-of-turn token. Rows
longer than ``max_len`` are dropped and counted, never truncated: a truncated
row would teach the model an answer without its end.

The second half sets up the transformers Trainer over those examples: padding,
arguments, checkpoints and a progress callback. torch and transformers are
imported inside functions, so this module stays light to import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.prompting import render_training
from core.schema import answer_json
from trainer import prefix
from trainer.config import Progress, TrainConfig, train_dtype
from trainer.records import IGNORE, Encoded, Example, Record

if TYPE_CHECKING:
    from trainer.prefix import PrefixCache

__all__ = ["IGNORE", "Encoded", "Example", "Progress", "encode_record", "encode_records"]

log = logging.getLogger(__name__)


def encode_record(tokenizer: Any, record: Record) -> Example:
    """The training example for one record, whatever its length."""
    prompt, completion = render_training(tokenizer, record.text, answer_json(record.gold))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return Example(
        input_ids=list(prompt_ids) + list(answer_ids),
        labels=[IGNORE] * len(prompt_ids) + list(answer_ids),
    )


def encode_records(tokenizer: Any, records: Iterable[Record], max_len: int) -> Encoded:
    """Tokenise every record; rows with more than ``max_len`` tokens are dropped and counted."""
    out = Encoded()
    for record in records:
        example = encode_record(tokenizer, record)
        n = len(example.input_ids)
        out.longest = max(out.longest, n)
        if n > max_len:
            out.dropped += 1
        else:
            out.examples.append(example)
    return out


class ExampleDataset:
    """A map-style dataset over examples, as the transformers Trainer expects.

    With a :class:`trainer.prefix.PrefixCache` each row also carries its cached
    hidden states, and training starts from them (:func:`answer_loss`).
    """

    def __init__(self, examples: Sequence[Example], cache: PrefixCache | None = None) -> None:
        self.examples = list(examples)
        self.cache = cache

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e = self.examples[i]
        # "input_ids" is the length the group-by-length sampler measures.
        row: dict[str, Any] = {"input_ids": e.input_ids, "labels": e.labels}
        return row if self.cache is None else row | self.cache.row(i)


class PadCollator:
    """Right-pads a batch: ``pad_id`` in ``input_ids``, ``IGNORE`` in labels, 0 in the mask.

    The mask, not the pad id, marks padding, so a tokenizer whose pad token is
    also its end-of-turn token still learns to emit that token.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids, labels, mask = [], [], []
        for r in rows:
            pad = width - len(r["input_ids"])
            ids.append(r["input_ids"] + [self.pad_id] * pad)
            labels.append(r["labels"] + [IGNORE] * pad)
            mask.append([1] * len(r["input_ids"]) + [0] * pad)
        batch = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }
        if prefix.KEY in rows[0]:
            states = [r[prefix.KEY] for r in rows]
            padded = states[0].new_zeros((len(rows), width, states[0].shape[-1]))
            for j, state in enumerate(states):
                padded[j, : len(state)] = state
            batch[prefix.KEY] = padded
            batch[prefix.START] = rows[0][prefix.START]
        return batch


def answer_loss(model: Any, batch: dict[str, Any], num_items: Any = None) -> Any:
    """The causal-LM loss over answer tokens, with the output head run on those positions only.

    Equal to the model's own loss (``model(**batch).loss``), but the output head,
    about a fifth of a small model's compute, and the float32 log-softmax over
    the vocabulary run on the answer tokens alone instead of on every position
    of the padded batch. On the default model this cut a CPU training step by
    about a quarter (docs/benchmarks.md). ``num_items`` is the Trainer's count
    of answer tokens over all gradient-accumulation micro-batches; without it
    the loss is the mean over this batch.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = prefix.top_hidden(base, batch)
    target = batch["labels"][:, 1:]  # the state at position i predicts token i + 1
    keep = target != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    total = F.cross_entropy(logits, target[keep], reduction="sum")
    return total / (num_items if num_items is not None else keep.sum().clamp(min=1))


# --- the transformers Trainer ------------------------------------------------------


def progress_callback(report: Progress) -> Any:
    """A Trainer callback that calls ``report`` after every optimiser step."""
    from transformers import TrainerCallback

    class _Report(TrainerCallback):  # type: ignore[misc]
        loss: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            report({"phase": "train", "step": state.global_step,
                    "total": state.max_steps, "loss": self.loss})

    return _Report()


def time_limit_callback(limit_s: float, started: float | None = None) -> Any:
    """A Trainer callback that stops training ``limit_s`` seconds after ``started``.

    ``started`` is a :func:`time.monotonic` time; by default, the first step.
    The learning-rate schedule still runs over ``max_steps``; a stopped run ends
    with its rate part-way down, and its last step is checkpointed as usual.
    """
    from transformers import TrainerCallback

    class _Stop(TrainerCallback):  # type: ignore[misc]
        start_s = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start_s = time.monotonic() if started is None else started

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if time.monotonic() - self.start_s >= limit_s:
                control.should_training_stop = True

    return _Stop()


def save_timer_callback(every_s: float) -> Any:
    """A Trainer callback that asks for a checkpoint once ``every_s`` seconds have passed
    since the last one (or the first step), whatever ``save_every`` says."""
    from transformers import TrainerCallback

    class _Save(TrainerCallback):  # type: ignore[misc]
        last_s = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.last_s = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if time.monotonic() - self.last_s >= every_s:
                control.should_save = True

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.last_s = time.monotonic()

    return _Save()


def training_args(config: TrainConfig, ckpt_dir: Path, device: str, has_eval: bool) -> Any:
    """TrainingArguments for ``config``, with resumable checkpoints in ``ckpt_dir``."""
    from transformers import TrainingArguments


    on_gpu = device.startswith("cuda")
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        logging_steps=config.log_every,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_every,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=2,
        seed=config.seed,
        use_cpu=not on_gpu,
        # bf16 autocast only on GPU; on CPU the base weights themselves are bf16.
        bf16=on_gpu and train_dtype(config, device) == "bfloat16",
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        report_to=config.trainer_report_to(),
        disable_tqdm=not config.progress,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,  # evaluation here is the loss; extraction is scored by tiqu eval
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        dataloader_num_workers=0,
    )


def trainer_class(answer_head: bool) -> Any:
    """The transformers Trainer, with :func:`answer_loss` as its loss when ``answer_head``."""
    from transformers import Trainer

    if not answer_head:
        return Trainer

    class AnswerTrainer(Trainer):  # type: ignore[misc]
        # With the Trainer's token count, answer_loss is already a share of the whole
        # accumulated batch; without it (a model that takes no loss arguments) it is a
        # per-batch mean, which the Trainer then divides by the accumulation steps.
        # The Trainer's default rule (loss_is_scaled_for_ga = None) does exactly that.

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            loss = answer_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss

    return AnswerTrainer


def make_trainer(model: Any, tok: Any, sets: tuple[Encoded, Encoded], config: TrainConfig,
                 ckpt_dir: Path, device: str, report: Progress,
                 cache: PrefixCache | None = None, started: float | None = None) -> Any:
    """A transformers Trainer over the encoded ``(train, val)`` sets.

    ``cache`` holds the training rows' frozen prefix; ``started`` (monotonic
    seconds) is when the time limit starts counting, by default the first step.
    """
    train_set, val_set = sets
    return trainer_class(config.trim_logits)(
        model=model,
        args=training_args(config, ckpt_dir, device, has_eval=bool(val_set.examples)),
        data_collator=PadCollator(int(tok.pad_token_id)),
        train_dataset=ExampleDataset(train_set.examples, cache),
        eval_dataset=ExampleDataset(val_set.examples) if val_set.examples else None,
        callbacks=[progress_callback(report)]
        + ([time_limit_callback(config.max_train_s, started)] if config.max_train_s else [])
        + ([save_timer_callback(config.save_every_s)] if config.save_every_s else []),
    )


def prefix_cache(model: Any, tok: Any, train_set: Encoded, config: TrainConfig,
                 layers: list[int] | None, device: str) -> PrefixCache | None:
    """The frozen prefix of the training rows, where ``config`` asks for it and it is exact."""
    if not (config.cache_prefix and config.trim_logits):
        return None
    reason = prefix.why_not(model, layers)
    if reason:
        log.info("frozen prefix not cached: %s", reason)
        return None
    assert layers is not None
    return prefix.build(model, train_set.examples, min(layers), PadCollator(int(tok.pad_token_id)),
                        device, config.eval_batch_size, config.progress)


def fit(model: Any, tok: Any, sets: tuple[Encoded, Encoded], config: TrainConfig,
        ckpt_dir: Path, device: str, report: Progress, resuming: bool,
        layers: list[int] | None = None) -> tuple[Any, PrefixCache | None]:
    """Run the Trainer (from the last checkpoint when ``resuming``); returns it and the cache.

    The time limit counts from before the frozen prefix is cached, so a run with
    the cache takes no more wall time than one without.
    """
    started = time.monotonic()
    cache = prefix_cache(model, tok, sets[0], config, layers, device)
    trainer = make_trainer(model, tok, sets, config, ckpt_dir, device, report, cache, started)
    trainer.train(resume_from_checkpoint=True if resuming else None)
    if sets[1].examples and trainer.state.global_step % config.eval_every:
        trainer.evaluate()  # the curve ends with an eval point
    return trainer, cache
