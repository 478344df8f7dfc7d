"""A hostile adapter registry on real Redis: forged records never write, read or
delete outside their folders, and a live worker keeps serving through them.

Anyone with the Redis password can write registry records. Each test forges
one (traversal in versions and chunk keys, absolute paths, pickle weights,
huge chunk counts, links out of the folder store, missing or wrong
signatures), checks the clear error, and checks that every file and folder
outside the adapter cache is exactly as before, with no leftovers inside it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis

from core.adapter_stores import BLOB_PREFIX, CHUNK_BYTES, MAX_CHUNKS
from core.adapters import CACHE_DIRNAME, VERSIONS_KEY, Registry, check_adapter_folder, worker_key
from core.errors import ConfigError, IncompatibleAdapter
from core.manifest import Manifest, sha256_file
from core.names import ACTIVE_ADAPTER_KEY
from core.settings import Settings
from tests.conftest import WorkerProc, start_worker
from tests.test_adapters import make_adapter
from tests.test_hotswap import TEXTS, ask, env_for

KEY = "publisher-and-worker-secret"


@pytest.fixture(scope="module")
def adapter_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("hostile") / "v1", "v1", seed=1)


def registry(redis_db: redis.Redis, tmp_path: Path, **kw: Any) -> Registry:
    """The registry of a node whose cache is ``tmp_path/cache`` and whose shared
    adapter folder is ``tmp_path/shared``."""
    return Registry(redis_db, Settings(cache_dir=tmp_path / "cache",
                                       adapter_dir=tmp_path / "shared", **kw))


def sentinels(tmp_path: Path) -> None:
    """Files and folders a forged version or chunk key would reach."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("keep")
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / "neighbour").mkdir()
    (tmp_path / "cache" / "neighbour" / "keep.txt").write_text("keep")


def snapshot(root: Path, cache_root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` outside ``cache_root`` and ``root/logs``, with its
    bytes (None: a folder)."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        if any(p in (path, *path.parents) for p in (cache_root, root / "logs")):
            continue
        out[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return out


def record_of(redis_db: redis.Redis, version: str) -> dict[str, Any]:
    raw = redis_db.hget(VERSIONS_KEY, version)
    assert raw is not None
    return dict(json.loads(raw))


def forge(redis_db: redis.Redis, field: str, record: dict[str, Any], **changes: Any) -> None:
    """Write a record as an attacker would: straight into the versions hash."""
    forged = json.loads(json.dumps(record))
    for key, value in changes.items():
        if key == "manifest_version":
            forged["manifest"]["version"] = value
        elif key == "files":
            forged["manifest"]["files"] = value
        else:
            forged[key] = value
    redis_db.hset(VERSIONS_KEY, field, json.dumps(forged))


def refused(reg: Registry, version: str, match: str, tmp_path: Path,
            error: type[Exception] = IncompatibleAdapter) -> str:
    """Fetch ``version``; it must fail with ``match`` and change nothing outside the
    cache, and leave no temporary folder or ``version`` inside it."""
    before = snapshot(tmp_path, reg.cache_root)
    with pytest.raises(error, match=match) as err:
        reg.fetch(version)
    assert snapshot(tmp_path, reg.cache_root) == before
    left = [p.name for p in reg.cache_root.iterdir()] if reg.cache_root.exists() else []
    assert [n for n in left if n.startswith(".")] == []
    return str(err.value)


# --- versions -----------------------------------------------------------------------

def test_traversal_in_the_active_key_deletes_nothing(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path)
    reg.publish(adapter_dir)
    sentinels(tmp_path)
    v1 = record_of(redis_db, "v1")
    for hostile in ("../../victim", "../neighbour", "/abs/olute", "a/../../b", "..", "v1\n"):
        forge(redis_db, hostile, v1, version=hostile, manifest_version=hostile)
        redis_db.set(ACTIVE_ADAPTER_KEY, hostile)
        active = reg.active()
        assert active == hostile
        message = refused(reg, active, "is not a valid adapter version", tmp_path)
        assert repr(hostile)[:20] in message
    assert (tmp_path / "victim" / "keep.txt").read_text() == "keep"
    assert (tmp_path / "cache" / "neighbour" / "keep.txt").read_text() == "keep"


def test_a_record_naming_another_version_or_a_long_one_is_refused(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path)
    reg.publish(adapter_dir)
    sentinels(tmp_path)
    # A copy of v1 outside the folder store that the forged version points at.
    shutil.copytree(tmp_path / "shared" / "v1", tmp_path / "outside")
    v1 = record_of(redis_db, "v1")
    forge(redis_db, "ok1", v1, version="../outside", manifest_version="ok1")
    refused(reg, "ok1", r"names record.version '\.\./outside'", tmp_path)
    forge(redis_db, "ok2", v1, version="ok2", manifest_version="../outside")
    refused(reg, "ok2", r"manifest.version '\.\./outside'", tmp_path)
    long = "x" * 10_000
    forge(redis_db, "ok3", v1, version=long, manifest_version=long)
    message = refused(reg, "ok3", "names record.version 'xxx", tmp_path)
    assert len(message) < 400  # a forged value is clipped, not echoed whole
    assert not (reg.cache_root / "ok1").exists()


# --- chunk keys, sizes and counts in the redis store ------------------------------------

@pytest.mark.parametrize("key", ["../../../escaped.txt", "ABSOLUTE", "sub/adapter_config.json"])
def test_chunk_keys_that_leave_the_download_folder_write_nothing(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path, key: str
) -> None:
    reg = registry(redis_db, tmp_path, adapter_store="redis")
    reg.publish(adapter_dir)
    sentinels(tmp_path)
    key = str(tmp_path / "abs.txt") if key == "ABSOLUTE" else key
    v1 = record_of(redis_db, "v1")
    redis_db.set(BLOB_PREFIX + f"evil:{key}:0", b"attacker bytes")
    for rel in v1["chunks"]:  # the genuine files, so only the forged key is wrong
        for i in range(v1["chunks"][rel]):
            redis_db.copy(BLOB_PREFIX + f"v1:{rel}:{i}", BLOB_PREFIX + f"evil:{rel}:{i}")
    forge(redis_db, "evil", v1, version="evil", manifest_version="evil",
          chunks={**v1["chunks"], key: 1})
    message = refused(reg, "evil", "chunks key", tmp_path)
    assert repr(key)[:40] in message
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs.txt").exists()
    files = {**v1["manifest"]["files"], key: "0" * 64}
    forge(redis_db, "evil2", v1, version="evil2", manifest_version="evil2", files=files)
    refused(reg, "evil2", "manifest.files key", tmp_path)


def test_chunk_counts_and_chunk_sizes_are_bounded(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path, adapter_store="redis")
    reg.publish(adapter_dir)
    sentinels(tmp_path)
    v1 = record_of(redis_db, "v1")
    weights = "adapter_model.safetensors"
    for i in range(3):  # chunks exist past the real count: only the bound stops the reads
        redis_db.set(BLOB_PREFIX + f"big:{weights}:{i}", b"x" * 10)
    for rel in v1["chunks"]:
        if rel != weights:
            redis_db.copy(BLOB_PREFIX + f"v1:{rel}:0", BLOB_PREFIX + f"big:{rel}:0")
    forge(redis_db, "big", v1, version="big", manifest_version="big",
          chunks={**v1["chunks"], weights: 10**9})
    refused(reg, "big", rf"chunk count 1000000000 of '{weights}' is outside 0..{MAX_CHUNKS}",
            tmp_path)
    forge(redis_db, "big", v1, version="big", manifest_version="big", size_bytes=1 << 40)
    refused(reg, "big", "size_bytes 1099511627776 is outside", tmp_path)
    forge(redis_db, "big", v1, version="big", manifest_version="big",
          published_at="x" * (2 << 20))
    refused(reg, "big", r"record is \d+ bytes > limit 1048576", tmp_path)

    # One chunk far over the chunk size: refused without reading it whole.
    redis_db.set(BLOB_PREFIX + f"fat:{weights}:0", b"y" * (CHUNK_BYTES + 10))
    for rel in v1["chunks"]:
        if rel != weights:
            redis_db.copy(BLOB_PREFIX + f"v1:{rel}:0", BLOB_PREFIX + f"fat:{rel}:0")
    forge(redis_db, "fat", v1, version="fat", manifest_version="fat",
          chunks={**v1["chunks"], weights: 1})
    refused(reg, "fat", f"chunk 0 of '{weights}' is over {CHUNK_BYTES} bytes", tmp_path)


# --- weights: safetensors only -------------------------------------------------------

def bin_adapter(adapter_dir: Path, out: Path) -> Path:
    """``adapter_dir``'s adapter with its weights as ``adapter_model.bin`` (a pickle)."""
    import torch
    from safetensors.torch import load_file

    folder = out / "adapter"
    folder.mkdir(parents=True)
    shutil.copyfile(adapter_dir / "adapter" / "adapter_config.json",
                    folder / "adapter_config.json")
    torch.save(load_file(adapter_dir / "adapter" / "adapter_model.safetensors"),
               folder / "adapter_model.bin")
    return folder


def test_pickle_weights_are_refused_at_publish_and_at_fetch(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path, adapter_store="redis")
    src = tmp_path / "binsrc"
    folder = bin_adapter(adapter_dir, src)
    Manifest.load(adapter_dir).model_copy(update={"version": "b1", "files": {}}).save(src)
    with pytest.raises(ConfigError, match="'adapter_model.bin' is not an adapter file "
                                          r"\(only safetensors"):
        reg.publish(src)
    # Next to safetensors weights, a pickle is refused too, even when unlisted.
    shutil.copyfile(adapter_dir / "adapter" / "adapter_model.safetensors",
                    folder / "adapter_model.safetensors")
    listed = {n: sha256_file(folder / n)
              for n in ("adapter_config.json", "adapter_model.safetensors")}
    Manifest.load(adapter_dir).model_copy(update={"version": "b2", "files": listed}).save(src)
    with pytest.raises(IncompatibleAdapter, match=r"holds \['adapter_model.bin'\]"):
        reg.publish(src)
    assert redis_db.hlen(VERSIONS_KEY) == 0 and not list(redis_db.scan_iter(BLOB_PREFIX + "*"))

    reg.publish(adapter_dir)
    sentinels(tmp_path)
    v1 = record_of(redis_db, "v1")
    pickle = (folder / "adapter_model.bin").read_bytes()
    assert len(pickle) <= CHUNK_BYTES
    redis_db.set(BLOB_PREFIX + "pk:adapter_model.bin:0", pickle)
    redis_db.copy(BLOB_PREFIX + "v1:adapter_config.json:0",
                  BLOB_PREFIX + "pk:adapter_config.json:0")
    files = {"adapter_config.json": v1["manifest"]["files"]["adapter_config.json"],
             "adapter_model.bin": sha256_file(folder / "adapter_model.bin")}
    forge(redis_db, "pk", v1, version="pk", manifest_version="pk", files=files,
          chunks={"adapter_config.json": 1, "adapter_model.bin": 1})
    refused(reg, "pk", r"'adapter_model.bin' is not an adapter file \(only safetensors", tmp_path)

    # A pickle planted in the cache is refused when loaded.
    cached = reg.fetch("v1")
    (cached / "adapter_model.bin").write_bytes(pickle)
    with pytest.raises(IncompatibleAdapter, match="only adapter_model.safetensors"):
        check_adapter_folder(cached)


def test_startup_adapter_with_only_pickle_weights_is_refused(
    tiny_model: Path, adapter_dir: Path, tmp_path: Path
) -> None:
    from inference.engine import Engine

    folder = bin_adapter(adapter_dir, tmp_path / "local")
    with pytest.raises(IncompatibleAdapter) as err:
        Engine(Settings(base_model=str(tiny_model), dtype="float32", adapter=str(folder)))
    assert "['adapter_model.bin']" in str(err.value) and "safetensors" in str(err.value)


# --- the folder store ------------------------------------------------------------------

def test_folder_store_reads_only_below_its_root(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    reg = registry(redis_db, tmp_path)
    reg.publish(adapter_dir)
    sentinels(tmp_path)
    v1 = record_of(redis_db, "v1")
    # A version whose weights are a link to a file outside the store, with the
    # right sha256: the copy would pass every checksum.
    secret = tmp_path / "secret.safetensors"
    shutil.copyfile(adapter_dir / "adapter" / "adapter_model.safetensors", secret)
    linked = tmp_path / "shared" / "lnk" / "adapter"
    shutil.copytree(tmp_path / "shared" / "v1" / "adapter", linked)
    (linked / "adapter_model.safetensors").unlink()
    (linked / "adapter_model.safetensors").symlink_to(secret)
    forge(redis_db, "lnk", v1, version="lnk", manifest_version="lnk")
    refused(reg, "lnk", "'lnk/adapter/adapter_model.safetensors' leaves its folder", tmp_path)
    # The record's location is never read: each node uses its own mount point.
    forge(redis_db, "v1", v1, location=str(tmp_path / "victim"))
    assert (reg.fetch("v1") / "adapter_model.safetensors").read_bytes() == secret.read_bytes()
    assert (tmp_path / "victim" / "keep.txt").read_text() == "keep"


# --- signing -----------------------------------------------------------------------------

def test_signed_records_and_refusals(
    redis_db: redis.Redis, adapter_dir: Path, tmp_path: Path
) -> None:
    signed = registry(redis_db, tmp_path, adapter_store="redis", adapter_signing_key=KEY)
    plain = registry(redis_db, tmp_path / "p", adapter_store="redis")
    record = signed.publish(adapter_dir)
    assert len(record.signature) == 64
    assert (signed.fetch("v1") / "adapter_model.safetensors").is_file()
    signed.promote("v1")

    plain.publish(adapter_dir, version="u1")
    assert (plain.fetch("u1") / "adapter_model.safetensors").is_file()  # no key: as before
    messages = [refused(signed, "u1", "u1 is not signed", tmp_path)]
    with pytest.raises(IncompatibleAdapter, match="not signed"):
        signed.promote("u1")
    other = registry(redis_db, tmp_path / "o", adapter_store="redis",
                     adapter_signing_key="another key")
    messages.append(refused(other, "v1", "signature does not match", tmp_path))

    # A record whose sha256s were changed after signing (say, to match other bytes).
    v1 = record_of(redis_db, "v1")
    files = {**v1["manifest"]["files"], "adapter_model.safetensors": "f" * 64}
    forge(redis_db, "v1", v1, files=files)
    shutil.rmtree(signed.cache_root / "v1")
    messages.append(refused(signed, "v1", "signature does not match", tmp_path))
    # A forged signature that is not ASCII is a plain refusal, not a TypeError.
    forge(redis_db, "v1", v1, signature="\u00e9" * 64)
    messages.append(refused(signed, "v1", "signature does not match", tmp_path))
    assert not (signed.cache_root / "v1").exists()
    assert all(KEY not in m and record.signature not in m for m in messages)
    assert redis_db.get(ACTIVE_ADAPTER_KEY) == b"v1"


def test_cli_publish_signs_when_the_key_is_set(
    redis_db: redis.Redis, redis_url: str, adapter_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiqu.cli import main

    monkeypatch.setenv("TIQU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TIQU_ADAPTER_SIGNING_KEY", KEY)
    assert main(["--redis-url", redis_url, "adapters", "publish", str(adapter_dir)]) == 0
    out = capsys.readouterr()
    assert out.out == "v1\n" and "signed" in out.err and KEY not in out.out + out.err
    reg = registry(redis_db, tmp_path, adapter_signing_key=KEY)
    assert reg.get("v1", verify=True).signature


# --- a live worker ----------------------------------------------------------------------

def test_live_worker_keeps_serving_through_hostile_records(
    redis_db: redis.Redis, redis_url: str, tiny_model: Path, adapter_dir: Path,
    tmp_path: Path, workers: list[WorkerProc],
) -> None:
    from producer import Client

    reg = Registry(redis_db, Settings(cache_dir=tmp_path / "publisher",
                                      adapter_dir=tmp_path / "shared"))
    reg.publish(adapter_dir)
    Registry(redis_db, Settings(cache_dir=tmp_path / "publisher", adapter_store="redis",
                                adapter_dir=tmp_path / "shared")).publish(adapter_dir, "r1")
    reg.promote("v1")
    (tmp_path / "logs").mkdir()
    w = start_worker("hostile", env_for(redis_url, tiny_model, tmp_path, "hostile"),
                     tmp_path / "logs" / "w.log")
    workers.append(w)
    client = Client(redis_db)
    assert [e["adapter_version"] for e in ask(client, TEXTS)] == ["v1"]
    # The worker's cache is tmp_path/cache-hostile/adapter-cache: both forgeries
    # below climb from it to tmp_path.
    sentinels(tmp_path)
    cache_root = tmp_path / "cache-hostile" / CACHE_DIRNAME
    before = snapshot(tmp_path, cache_root)

    v1, r1 = record_of(redis_db, "v1"), record_of(redis_db, "r1")
    forge(redis_db, "../../victim", v1, version="../../victim", manifest_version="../../victim")
    redis_db.set(BLOB_PREFIX + "evil:../../../escaped.txt:0", b"attacker bytes")
    for i in range(r1["chunks"]["adapter_model.safetensors"]):
        redis_db.copy(BLOB_PREFIX + f"r1:adapter_model.safetensors:{i}",
                      BLOB_PREFIX + f"evil:adapter_model.safetensors:{i}")
    redis_db.copy(BLOB_PREFIX + "r1:adapter_config.json:0",
                  BLOB_PREFIX + "evil:adapter_config.json:0")
    forge(redis_db, "evil", r1, version="evil", manifest_version="evil",
          chunks={**r1["chunks"], "../../../escaped.txt": 1})
    for hostile, why in (("../../victim", "is not a valid adapter version"),
                         ("evil", "chunks key '../../../escaped.txt'")):
        redis_db.set(ACTIVE_ADAPTER_KEY, hostile)
        for _ in range(2):
            envs = ask(client, TEXTS)
            assert [(e["status"], e["adapter_version"]) for e in envs] == [("ok", "v1")]
        state = {k.decode(): v.decode() for k, v in redis_db.hgetall(worker_key(w.name)).items()}
        assert state["serving"] == "v1" and why in state["last_error"], state
        assert state["refused"] in (hostile, repr(hostile))
        assert w.proc.poll() is None
    assert snapshot(tmp_path, cache_root) == before
    assert (tmp_path / "victim" / "keep.txt").read_text() == "keep"
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in cache_root.iterdir()) == ["v1"]
