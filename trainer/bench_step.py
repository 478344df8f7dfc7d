"""``tiqu bench --train-step``: a LoRA training step with and without the frozen prefix.

Loads the configured base model in its training dtype, puts LoRA on
``layers`` and times forward + backward of the same batches of synthetic
training rows two ways, alternating over ``rounds``: the whole model at every
step, and the layers from the first LoRA one up, started from the cached
prefix (trainer/prefix.py). Same machine, same batches, side by side, so the
ratio means something even where absolute times drift.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings import Settings


def measure(settings: Settings, layers: list[int], steps: int = 10, rounds: int = 2,
            batch_size: int = 8, rows: int = 160, seed: int = 0) -> dict[str, Any]:
    """Seconds a step, per round and way; the prefix cache's build time and size."""
    from trainer import prefix
    from trainer.data import split_records, synth_records
    from trainer.lora import TrainConfig, add_lora, load_for_training
    from trainer.sft import PadCollator, answer_loss, encode_records

    config = TrainConfig(r=16, alpha=32, batch_size=batch_size, layers=layers, dropout=0.0)
    model, tok, _, device = load_for_training(settings, config)
    model, resolved, _ = add_lora(model, config)
    records = split_records(synth_records(rows * 5 // 4, seed=1))["train"][:rows]
    examples = encode_records(tok, records, config.max_len).examples
    collate = PadCollator(int(tok.pad_token_id))
    start = min(resolved or [0])
    reason = prefix.why_not(model, resolved)
    cache = None if reason else prefix.build(model, examples, start, collate, device,
                                             progress=False)
    if cache is None:
        raise ConfigError("the frozen prefix can't be cached here: "
                          f"{reason or 'the short path differs from the whole model'}")
    rng = random.Random(seed)
    batches = [rng.sample(range(len(examples)), batch_size) for _ in range(steps)]
    model.train()

    def one_round(cached: bool) -> float:
        t0 = time.perf_counter()
        for idx in batches:
            batch = collate([{"input_ids": examples[i].input_ids, "labels": examples[i].labels,
                              **(cache.row(i) if cached else {})} for i in idx])
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            answer_loss(model, batch).backward()
            model.zero_grad()
        return (time.perf_counter() - t0) / steps

    whole, short = [], []
    for _ in range(rounds):
        whole.append(round(one_round(False), 3))
        short.append(round(one_round(True), 3))
    return {
        "base_model": settings.base_model, "device": device, "layers": resolved,
        "batch_size": batch_size, "steps": steps, "rows": len(examples),
        "whole_s_per_step": whole, "cached_s_per_step": short,
        "speedup": round(sum(whole) / sum(short), 2),
        "cache_build_s": round(cache.build_s, 1), "cache_mb": round(cache.megabytes),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(settings: Settings, json_path: Path | None, layers: list[int], steps: int) -> int:
    report = measure(settings, layers, steps=steps)
    print(f"training step, {report['base_model']}, LoRA on layers {report['layers'][0]}-"
          f"{report['layers'][-1]}, batch {report['batch_size']}, {report['steps']} steps a round")
    for name in ("whole", "cached"):
        print(f"  {name:<7} {'  '.join(f'{s:.2f}' for s in report[f'{name}_s_per_step'])} s a step")
    print(f"  speedup {report['speedup']}x; cache of {report['rows']} rows: "
          f"{report['cache_build_s']} s, {report['cache_mb']} MB")
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))
    return 0
