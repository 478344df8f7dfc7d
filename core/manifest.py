"""The adapter manifest: what a trained adapter was made from and how it scored.

Written by the trainer next to ``adapter/`` as ``manifest.json``; read by the
registry and by workers before a hot swap (base model hash, prompt version
and schema version must match the worker's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.prompting import PROMPT_VERSION
from core.schema import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
ADAPTER_DIRNAME = "adapter"


class LoraSpec(BaseModel):
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] | str = "all-linear"
    layers: list[int] | None = None


class Manifest(BaseModel):
    """Everything needed to decide whether an adapter can serve on a worker."""

    model_config = ConfigDict(extra="allow")

    version: str
    created_at: str
    base_model: str
    base_model_hash: str
    prompt_version: str = PROMPT_VERSION
    schema_version: str = SCHEMA_VERSION
    lora: LoraSpec = Field(default_factory=LoraSpec)
    data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="sha256 per adapter file")

    def save(self, folder: Path) -> Path:
        path = folder / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        return cls.model_validate(json.loads((folder / MANIFEST_NAME).read_text()))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_folder(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by relative path."""
    return {str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}
