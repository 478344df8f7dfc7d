"""Where published adapter files live: a shared folder or chunks in Redis.

:class:`FolderStore` keeps ``<root>/<version>/adapter/...`` plus
``manifest.json`` in a folder every node mounts as ``settings.adapters_dir``.
:class:`RedisStore` keeps each file in chunks of at most 1 MiB under
``tiqu:adapters:blob:<version>:<file>:<n>``, for adapters up to 64 MiB.
Both only move bytes; :func:`verify_files` checks every sha256 against the
manifest after each download. A record read back is hostile input until
:func:`check_record` passed: every name is checked, every path is proven to stay
inside its folder before a byte is read or written, and the Redis store's
chunk counts and bytes are bounded. Light: redis and pydantic, never torch.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Protocol

import redis
from pydantic import BaseModel, Field

from core.errors import ConfigError, IncompatibleAdapter, ModelNotFound
from core.manifest import (
    ADAPTER_DIRNAME,
    WEIGHTS_NAME,
    Manifest,
    check_file_name,
    check_version,
    hash_folder,
    inside,
    sha256_file,
    shown,
)
from core.names import KEY_PREFIX
from core.redis import client_from_url
from core.settings import Settings

BLOB_PREFIX = KEY_PREFIX + "adapters:blob:"
CHUNK_BYTES = 1 << 20
REDIS_STORE_MAX_BYTES = 64 << 20
#: The most chunks a record may name in all (each file's last chunk may be short).
MAX_CHUNKS = REDIS_STORE_MAX_BYTES // CHUNK_BYTES + 3
_SHA256_RE = re.compile(r"[0-9a-f]{64}")  # use fullmatch


class Record(BaseModel):
    """One published adapter version."""

    version: str
    store: Literal["folder", "redis"]
    location: str
    published_at: str
    size_bytes: int
    chunks: dict[str, int] = Field(default_factory=dict, description="redis store: per file")
    manifest: Manifest
    signature: str = Field("", description="HMAC-SHA256 of the version and file sha256s")


def check_record(record: Record, version: str) -> None:
    """Raise IncompatibleAdapter naming the field unless ``record``, stored under
    ``version``, names only valid versions and adapter files, and stays in bounds."""
    check_version("adapter version", version)
    if record.version != version or record.manifest.version != version:
        raise IncompatibleAdapter(
            f"adapter record under {version!r} names record.version {shown(record.version)} "
            f"and manifest.version {shown(record.manifest.version)}")
    for rel, digest in record.manifest.files.items():
        check_file_name(f"adapter {version} manifest.files key", rel)
        if not _SHA256_RE.fullmatch(digest):
            raise IncompatibleAdapter(f"adapter {version} manifest.files[{rel!r}] "
                                      f"{shown(digest)} is not a sha256")
    if WEIGHTS_NAME not in record.manifest.files:
        raise IncompatibleAdapter(f"adapter {version} manifest.files has no {WEIGHTS_NAME}")
    if record.store == "folder":
        if record.chunks:
            raise IncompatibleAdapter(f"adapter {version} is in the folder store but names "
                                      f"chunks {shown(sorted(record.chunks))}")
        return
    if not 0 <= record.size_bytes <= REDIS_STORE_MAX_BYTES:
        raise IncompatibleAdapter(f"adapter {version} size_bytes {record.size_bytes} is "
                                  f"outside 0..{REDIS_STORE_MAX_BYTES}")
    for rel, n in record.chunks.items():
        check_file_name(f"adapter {version} chunks key", rel)
        if not 0 <= n <= MAX_CHUNKS:
            raise IncompatibleAdapter(f"adapter {version} chunk count {n} of {rel!r} is "
                                      f"outside 0..{MAX_CHUNKS}")
    if sum(record.chunks.values()) > MAX_CHUNKS:
        raise IncompatibleAdapter(f"adapter {version} names {sum(record.chunks.values())} "
                                  f"chunks > limit {MAX_CHUNKS}")
    if set(record.chunks) != set(record.manifest.files):
        raise IncompatibleAdapter(f"adapter {version} chunks {sorted(record.chunks)} != "
                                  f"manifest.files {sorted(record.manifest.files)}")


def verify_files(folder: Path, expected: dict[str, str], version: str) -> None:
    """Raise IncompatibleAdapter unless every expected file is in ``folder`` with its sha256."""
    problems = []
    for rel, want in sorted(expected.items()):
        path = inside(folder, check_file_name(f"adapter {version} file", rel))
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
    for rel in files:
        check_file_name(f"file in {folder}", rel, ConfigError)
    if WEIGHTS_NAME not in files:
        raise ModelNotFound(f"adapter folder {folder} has no {WEIGHTS_NAME} weights")
    if listed:
        verify_files(folder, listed, manifest.version)
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
        """Copy the record's files from ``root/<version>/adapter/`` into ``dest``; every
        source (symbolic links resolved) and target must stay inside its folder.
        The record's ``location`` is never read: each node has its own mount point."""
        version = check_version("adapter version", record.version)
        source = inside(self.root, version, ADAPTER_DIRNAME)
        if not source.is_dir():
            raise ModelNotFound(f"adapter {version} is not in the adapter folder {source}")
        for rel in record.manifest.files:
            name = check_file_name(f"adapter {version} file", rel)
            origin = inside(self.root, version, ADAPTER_DIRNAME, name)
            if origin.is_file():  # a missing file is reported by verify_files
                shutil.copyfile(origin, inside(dest, name))


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
        """Write each file's chunks into ``dest/<file>``, a new file inside ``dest``.

        Names and chunk counts are checked before anything is written; a chunk
        longer than ``chunk_bytes`` or a total over ``max_bytes`` stops the
        download (the caller removes ``dest``)."""
        check_record(record, record.version)
        targets = {rel: inside(dest, check_file_name(f"adapter {record.version} chunks key",
                                                     rel)) for rel in record.chunks}
        total = 0
        for rel, n in record.chunks.items():
            with open(targets[rel], "xb") as fh:  # "x": never through an existing link
                for i in range(n):
                    total += self._put_chunk(fh, record.version, rel, i)
                    if total > self.max_bytes:
                        raise IncompatibleAdapter(f"adapter {record.version} is over "
                                                  f"{self.max_bytes} bytes: refused")

    def _put_chunk(self, fh: Any, version: str, rel: str, i: int) -> int:
        """Copy chunk ``i`` into ``fh``; at most ``chunk_bytes`` + 1 bytes leave Redis."""
        block = self.client.getrange(self.chunk_key(version, rel, i), 0, self.chunk_bytes)
        if not isinstance(block, bytes) or not block:
            raise ModelNotFound(f"adapter {version} chunk {i} of {rel!r} is missing from Redis")
        if len(block) > self.chunk_bytes:
            raise IncompatibleAdapter(f"adapter {version} chunk {i} of {rel!r} is over "
                                      f"{self.chunk_bytes} bytes: refused")
        fh.write(block)
        return len(block)


def redis_from_settings(settings: Settings) -> redis.Redis:
    """A Redis client on the broker URL (``rediss://`` with the configured CA)."""
    return client_from_url(settings.redis_url, settings)
