"""Where published adapter files live: a shared folder or chunks in Redis.

:class:`FolderStore` keeps ``<root>/<version>/adapter/...`` plus
``manifest.json`` in a folder every node mounts as ``settings.adapters_dir``.
:class:`RedisStore` keeps each file in chunks of at most 1 MiB under
``tiqu:adapters:blob:<version>:<file>:<n>``, for adapters up to 64 MiB.
Both only move bytes; :func:`verify_files` checks every sha256 against the
manifest after each download. Light: redis and pydantic, never torch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol

import redis
from pydantic import BaseModel, Field

from core.errors import ConfigError, IncompatibleAdapter, ModelNotFound
from core.manifest import ADAPTER_DIRNAME, Manifest, hash_folder, sha256_file
from core.names import KEY_PREFIX
from core.settings import Settings

BLOB_PREFIX = KEY_PREFIX + "adapters:blob:"
CHUNK_BYTES = 1 << 20
REDIS_STORE_MAX_BYTES = 64 << 20


class Record(BaseModel):
    """One published adapter version."""

    version: str
    store: Literal["folder", "redis"]
    location: str
    published_at: str
    size_bytes: int
    chunks: dict[str, int] = Field(default_factory=dict, description="redis store: per file")
    manifest: Manifest


def verify_files(folder: Path, expected: dict[str, str], version: str) -> None:
    """Raise IncompatibleAdapter unless every expected file is in ``folder`` with its sha256."""
    problems = []
    for rel, want in sorted(expected.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"file {rel!r} is missing")
            continue
        got = sha256_file(path)
        if got != want:
            problems.append(f"file {rel!r} sha256 {got!r} != manifest sha256 {want!r}")
    if problems:
        raise IncompatibleAdapter(f"adapter {version}: " + "; ".join(problems))


def adapter_files(src: Path, manifest: Manifest) -> dict[str, str]:
    """The files to publish from ``src/adapter`` with their sha256, checked now.

    A manifest that lists files (keys relative to ``adapter/``; an ``adapter/``
    prefix is accepted) must match them; one that lists none gets every file hashed.
    """
    folder = src / ADAPTER_DIRNAME
    if not (folder / "adapter_config.json").is_file():
        raise ModelNotFound(f"adapter folder {folder} has no adapter_config.json")
    listed = {k.removeprefix(ADAPTER_DIRNAME + "/"): v for k, v in manifest.files.items()}
    files = listed or hash_folder(folder)
    if listed:
        verify_files(folder, listed, manifest.version)
    if not any(rel.startswith("adapter_model.") for rel in files):
        raise ModelNotFound(f"adapter folder {folder} has no adapter_model.* weights")
    return files


class Store(Protocol):
    name: Literal["folder", "redis"]

    def put(self, version: str, folder: Path, files: dict[str, str],
            manifest: Manifest) -> tuple[str, dict[str, int]]: ...

    def get(self, record: Record, dest: Path) -> None: ...


class FolderStore:
    """A shared folder: ``root/<version>/adapter/...`` plus ``manifest.json``.

    Every node mounts the same folder as ``settings.adapters_dir``, so a record
    names the version, and each node finds it under its own mount point.
    """

    name: Literal["folder", "redis"] = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, version: str, folder: Path, files: dict[str, str],
            manifest: Manifest) -> tuple[str, dict[str, int]]:
        """Copy the files into place through a temporary folder, so a reader
        never sees half a version."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / version
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        try:
            for rel in files:
                target = tmp / ADAPTER_DIRNAME / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, target)
            manifest.save(tmp)
            if final.exists():  # a stale copy from a publish that never registered
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return str(final), {}

    def get(self, record: Record, dest: Path) -> None:
        source = self.root / record.version / ADAPTER_DIRNAME
        if not source.is_dir():
            raise ModelNotFound(f"adapter {record.version} is not in the adapter folder {source}")
        for rel in record.manifest.files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if (source / rel).is_file():  # a missing file is reported by verify_files
                shutil.copyfile(source / rel, target)


class RedisStore:
    """Adapter files in Redis, split into chunks of at most ``chunk_bytes``
    under ``tiqu:adapters:blob:<version>:<file>:<n>``."""

    name: Literal["folder", "redis"] = "redis"

    def __init__(self, client: redis.Redis, chunk_bytes: int = CHUNK_BYTES,
                 max_bytes: int = REDIS_STORE_MAX_BYTES) -> None:
        self.client = client
        self.chunk_bytes = chunk_bytes
        self.max_bytes = max_bytes

    @staticmethod
    def chunk_key(version: str, rel: str, n: int) -> str:
        return f"{BLOB_PREFIX}{version}:{rel}:{n}"

    def put(self, version: str, folder: Path, files: dict[str, str],
            manifest: Manifest) -> tuple[str, dict[str, int]]:
        """Write every chunk (refusing adapters over ``max_bytes`` before reading them)."""
        size = sum((folder / rel).stat().st_size for rel in files)
        if size > self.max_bytes:
            raise ConfigError(
                f"adapter {version} size {size} bytes > redis store limit {self.max_bytes} "
                "bytes; publish it with adapter_store=folder"
            )
        chunks: dict[str, int] = {}
        for rel in files:
            chunks[rel] = self._put_file(version, rel, folder / rel)
        return f"{BLOB_PREFIX}{version}:", chunks

    def _put_file(self, version: str, rel: str, path: Path) -> int:
        """Write one file's chunks, 8 to a round trip; returns the chunk count."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        with open(path, "rb") as fh:
            for n, block in enumerate(iter(lambda: fh.read(self.chunk_bytes), b""), 1):
                pipe.set(self.chunk_key(version, rel, n - 1), block)
                if n % 8 == 0:
                    pipe.execute()
        pipe.execute()
        return n

    def get(self, record: Record, dest: Path) -> None:
        for rel, n in record.chunks.items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                for i in range(n):  # one chunk at a time: at most 1 MiB in memory
                    block = self.client.get(self.chunk_key(record.version, rel, i))
                    if not isinstance(block, bytes):
                        raise ModelNotFound(f"adapter {record.version} chunk {i} of {rel!r} "
                                            "is missing from Redis")
                    fh.write(block)


def redis_from_settings(settings: Settings) -> redis.Redis:
    """A Redis client on the broker URL (``rediss://`` with the configured CA)."""
    kw: dict[str, Any] = {}
    if settings.redis_url.startswith("rediss://"):
        kw["ssl_cert_reqs"] = "required" if settings.redis_tls_verify else "none"
        if settings.redis_tls_ca:
            kw["ssl_ca_certs"] = settings.redis_tls_ca
    return redis.Redis.from_url(settings.redis_url, **kw)
