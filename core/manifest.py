"""The adapter manifest: what a trained adapter was made from and how it scored.

Written by the trainer next to ``adapter/`` as ``manifest.json``; read by the
registry and by workers before a hot swap (base model hash, prompt version
and schema version must match the worker's). Also the checks on everything
read back from the registry, which anyone who can write to Redis can forge:
version and file names, paths that must stay inside their folder, safetensors
only, and the optional HMAC signature over a version's file sha256s.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import IncompatibleAdapter, ModelNotFound, TiquError
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


#: Most breakpoints one field's calibration map may hold (a record stays small).
MAX_BREAKPOINTS = 256


class CalibrationMap(BaseModel):
    """A monotone map from a raw field confidence to P(the field is exact).

    Breakpoints ``x`` (strictly increasing, in [0, 1]) and ``y`` (non-decreasing,
    in [0, 1]); :meth:`apply` interpolates linearly between them and holds the
    end values outside, so the result is monotone and in [0, 1].
    """

    model_config = ConfigDict(extra="forbid")

    x: list[float]
    y: list[float]

    @model_validator(mode="after")
    def _check(self) -> CalibrationMap:
        problems = []
        if not 1 <= len(self.x) <= MAX_BREAKPOINTS or len(self.x) != len(self.y):
            problems.append(f"x and y need 1-{MAX_BREAKPOINTS} breakpoints each, got "
                            f"{len(self.x)} and {len(self.y)}")
        if any(not 0.0 <= v <= 1.0 for v in (*self.x, *self.y)):
            problems.append("every breakpoint must lie in [0, 1]")
        if any(b <= a for a, b in zip(self.x, self.x[1:], strict=False)):
            problems.append("x must be strictly increasing")
        if any(b < a for a, b in zip(self.y, self.y[1:], strict=False)):
            problems.append("y must be non-decreasing")
        if problems:
            raise ValueError("calibration map: " + "; ".join(problems))
        return self

    def apply(self, value: float) -> float:
        """The calibrated probability of a raw confidence ``value``."""
        x, y = self.x, self.y
        if value <= x[0]:
            return y[0]
        if value >= x[-1]:
            return y[-1]
        i = bisect.bisect_right(x, value)
        t = (value - x[i - 1]) / (x[i] - x[i - 1])
        return y[i - 1] + t * (y[i] - y[i - 1])


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
    calibration: dict[str, CalibrationMap] = Field(
        default_factory=dict, description="per field: raw confidence -> P(field exact)")

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


# --- names and folders read back from the registry ------------------------------

#: Versions: also folder names in every cache and parts of Redis keys.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # use fullmatch
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
#: The only files an adapter may carry (peft writes README.md, a model card that
#: nothing loads). Flat names: no folder inside ``adapter/``.
ADAPTER_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, "README.md"})


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages and logs."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_version(field: str, value: object,
                  error: type[TiquError] = IncompatibleAdapter) -> str:
    """``value`` if it is a valid version (1-128 of letters, digits, '.', '_', '-',
    starting with a letter or digit, no '..'); else ``error`` naming ``field``."""
    if isinstance(value, str) and VERSION_RE.fullmatch(value) and ".." not in value:
        return value
    raise error(f"{field} {shown(value)} is not a valid adapter version: use 1-128 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit, without '..'")


def check_file_name(field: str, value: object,
                    error: type[TiquError] = IncompatibleAdapter) -> str:
    """``value`` if it is one of :data:`ADAPTER_FILES`; else ``error`` naming ``field``."""
    if isinstance(value, str) and value in ADAPTER_FILES:
        return value
    hint = " (only safetensors weights are accepted)" if str(value).startswith(
        "adapter_model.") else ""
    raise error(f"{field} {shown(value)} is not an adapter file{hint}: one of "
                f"{sorted(ADAPTER_FILES)}")


def inside(root: Path, *parts: str) -> Path:
    """``root/parts...`` resolved, raising IncompatibleAdapter unless it stays in ``root``."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or not path.is_relative_to(base):
        raise IncompatibleAdapter(f"path {shown('/'.join(parts))} leaves its folder {str(root)!r}")
    return path


def check_adapter_folder(path: str | Path) -> Path:
    """The folder ``path`` if it is a loadable adapter: ``adapter_config.json`` and
    ``adapter_model.safetensors`` present, and no adapter weights in another format
    (e.g. ``adapter_model.bin``, a pickle that peft would read with torch.load).
    Raises ModelNotFound or IncompatibleAdapter naming the file."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelNotFound(f"adapter folder {shown(str(path))} is not a folder")
    unsafe = sorted(p.name for p in folder.iterdir()
                    if p.name.startswith("adapter_model.") and p.name != WEIGHTS_NAME)
    if unsafe:
        raise IncompatibleAdapter(f"adapter folder {str(folder)!r} holds {unsafe}: only "
                                  f"{WEIGHTS_NAME} weights are loaded")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
    if missing:
        raise ModelNotFound(f"adapter folder {str(folder)!r} has no {missing}")
    return folder


# --- signing ----------------------------------------------------------------------

def signing_payload(version: str, files: dict[str, str]) -> bytes:
    """The canonical JSON that a signature covers: the version and each file's sha256."""
    return json.dumps({"files": files, "version": version}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode()


def sign(key: str, version: str, files: dict[str, str]) -> str:
    """HMAC-SHA256 (hex) of :func:`signing_payload` under ``key``."""
    return hmac.new(key.encode(), signing_payload(version, files), hashlib.sha256).hexdigest()


def check_signature(key: str, version: str, files: dict[str, str], signature: str) -> None:
    """Raise IncompatibleAdapter unless ``signature`` is ``version``'s under ``key``."""
    if not signature:
        raise IncompatibleAdapter(f"adapter {version} is not signed, and a signing key is "
                                  "set: refused")
    # Bytes, not str: compare_digest raises TypeError on a forged non-ASCII str.
    if not hmac.compare_digest(sign(key, version, files).encode(), signature.encode()):
        raise IncompatibleAdapter(f"adapter {version}: signature does not match its version "
                                  "and file sha256s under the signing key: refused")
