"""``tiqu adapters pack RUN_DIR OUT``: a trained run made small enough to ship.

The LoRA weights are stored in bfloat16 (peft trains and saves them in float32;
serving casts them to the base model's dtype when it loads them), the folder
keeps only ``adapter/`` (config and safetensors) and ``manifest.json``, and the
manifest's file hashes are those of the packed files, so the registry and the
engine check them like any other adapter's. The manifest records what was packed
(``packed``: dtype and the size before and after).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.manifest import ADAPTER_DIRNAME, MANIFEST_NAME, Manifest, hash_folder

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def pack(run_dir: Path, out: Path, dtype: str = "bfloat16") -> Manifest:
    """Write the packed copy of ``run_dir`` to ``out`` (absent or empty); returns its
    manifest."""
    import torch
    from safetensors.torch import load_file, save_file

    src = run_dir / ADAPTER_DIRNAME
    if not (run_dir / MANIFEST_NAME).is_file() or not (src / WEIGHTS).is_file():
        raise ConfigError(f"{run_dir} is not a finished run (adapter/{WEIGHTS} and "
                          f"{MANIFEST_NAME})")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    target = {"bfloat16": torch.bfloat16, "float16": torch.float16,
              "float32": torch.float32}.get(dtype)
    if target is None:
        raise ConfigError(f"dtype {dtype!r}: use bfloat16, float16 or float32")
    manifest = Manifest.load(run_dir)
    (out / ADAPTER_DIRNAME).mkdir(parents=True, exist_ok=True)
    config = json.loads((src / CONFIG).read_text())
    # peft records the base model's local path; a shipped copy names the model, not a
    # folder of the machine it was trained on (loading passes the model itself)
    config["base_model_name_or_path"] = manifest.base_model
    (out / ADAPTER_DIRNAME / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    tensors = {k: v.to(target).contiguous() for k, v in load_file(str(src / WEIGHTS)).items()}
    save_file(tensors, str(out / ADAPTER_DIRNAME / WEIGHTS), metadata={"format": "pt"})
    before, after = ((d / WEIGHTS).stat().st_size for d in (src, out / ADAPTER_DIRNAME))
    manifest.files = hash_folder(out / ADAPTER_DIRNAME)
    extra: dict[str, Any] = {"dtype": dtype, "bytes_before": before, "bytes_after": after}
    packed = manifest.model_copy(update={"packed": extra})
    packed.save(out)
    return packed
