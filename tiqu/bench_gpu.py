"""``tiqu bench --gpu-sweep``: decode throughput of a Qwen3-0.6B-shaped model on one GPU.

Random weights (the architecture, not the checkpoint, sets the speed), bf16,
150-token prompts, exactly 120 new tokens per row, greedy with the KV cache,
at batch 1, 32, 128 and 256. Each batch size is compared with the
memory-bandwidth limit: every decode step reads all weights once plus every
row's KV cache, so ``tokens/s <= batch * bandwidth / (weight_bytes + batch *
kv_bytes_per_row)``. Prefill is timed separately (``max_new_tokens=1``) and
taken out of the decode rate.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError

BATCHES = (1, 32, 128, 256)
PROMPT_TOKENS = 150
NEW_TOKENS = 120
#: HBM bandwidth of an H200 (GB/s); the limit scales with it on other GPUs.
H200_BANDWIDTH_GBS = 4800.0


def qwen3_06b(dtype: Any) -> Any:
    """A randomly initialised model with Qwen3-0.6B's published shape, on the GPU."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=40960, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model: Any = Qwen3ForCausalLM(config)
    return model.to(device="cuda", dtype=dtype).eval()


def _timed_generate(model: Any, ids: Any, new_tokens: int) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       use_cache=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       pad_token_id=0)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def bandwidth_limit(model: Any, batch: int, bandwidth_gbs: float) -> float:
    """Upper bound on decode tokens/s from memory traffic alone (see the module doc)."""
    cfg = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 2
    kv_row = per_token * (PROMPT_TOKENS + NEW_TOKENS / 2)  # mean context while decoding
    return batch * bandwidth_gbs * 1e9 / (weight_bytes + batch * kv_row)


def gpu_sweep(batches: tuple[int, ...] = BATCHES,
              bandwidth_gbs: float = H200_BANDWIDTH_GBS) -> list[dict[str, Any]]:
    """One row per batch size: prefill ms, decode tokens/s, the limit and the ratio."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--gpu-sweep needs a CUDA device; torch sees none")
    model = qwen3_06b(torch.bfloat16)
    rows = []
    for batch in batches:
        ids = torch.randint(1, model.config.vocab_size, (batch, PROMPT_TOKENS), device="cuda")
        _timed_generate(model, ids, 4)  # warm-up: kernels, allocator
        prefill_s = _timed_generate(model, ids, 1)
        total_s = _timed_generate(model, ids, NEW_TOKENS)
        decode_tps = batch * (NEW_TOKENS - 1) / max(total_s - prefill_s, 1e-9)
        limit = bandwidth_limit(model, batch, bandwidth_gbs)
        rows.append({"batch": batch, "prefill_ms": prefill_s * 1000,
                     "end_to_end_tokens_per_s": batch * NEW_TOKENS / total_s,
                     "decode_tokens_per_s": decode_tps, "bandwidth_limit_tokens_per_s": limit,
                     "share_of_limit": decode_tps / limit})
    return rows


def main(json_path: Path | None) -> int:
    """Run the sweep, print a table and optionally write JSON."""
    import torch

    rows = gpu_sweep()
    print(f"Qwen3-0.6B shape, random bf16 weights, {PROMPT_TOKENS}-token prompts, "
          f"{NEW_TOKENS} new tokens, {torch.cuda.get_device_name(0)}")
    print(f"{'batch':>6}{'prefill ms':>12}{'decode tok/s':>14}{'limit tok/s':>13}{'share':>8}")
    for r in rows:
        print(f"{r['batch']:>6}{r['prefill_ms']:>12.1f}{r['decode_tokens_per_s']:>14.0f}"
              f"{r['bandwidth_limit_tokens_per_s']:>13.0f}{r['share_of_limit']:>8.2f}")
    if json_path:
        report = {"rows": rows, "device": torch.cuda.get_device_name(0),
                  "bandwidth_gbs": H200_BANDWIDTH_GBS, "torch": torch.__version__,
                  "date": datetime.now(UTC).isoformat(timespec="seconds")}
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return 0
