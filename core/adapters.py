"""The adapter registry: published versions, the active version, promotion history.

Redis holds the registry (all keys under ``tiqu:adapters:``):

- ``tiqu:adapters:versions``: a hash, version -> :class:`Record` JSON (manifest,
  store, location, size);
- ``tiqu:adapters:active`` (``core.names.ACTIVE_ADAPTER_KEY``): the ONE key that
  says what every worker should serve; ``""`` or ``"none"`` means the base model;
- ``tiqu:adapters:history``: a list of :class:`Promotion` JSON, oldest first.

The adapter files live in a store chosen by ``settings.adapter_store`` at
publish time (see core.adapter_stores): a shared folder, or Redis itself in
chunks of at most 1 MiB. Every file's sha256 is in the manifest and is checked
after each download and on every use of the local cache. Workers report what
they serve in a hash ``tiqu:workers:<name>``. Light: redis and pydantic, never torch.

Anyone who can write to Redis can write these keys, so everything read back is
checked before it names a path: versions and file names (core.manifest),
chunk counts and sizes (``check_record``), and, with
``settings.adapter_signing_key``, the record's HMAC signature.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import redis
from pydantic import BaseModel, ValidationError

from core.adapter_stores import (
    FolderStore,
    Record,
    RedisStore,
    Store,
    adapter_files,
    check_record,
    redis_from_settings,
    verify_files,
)
from core.errors import ConfigError, IncompatibleAdapter, ModelNotFound
from core.manifest import (
    ADAPTER_DIRNAME,
    MANIFEST_NAME,
    Manifest,
    check_adapter_folder,
    check_signature,
    check_version,
    inside,
    sign,
)
from core.names import ACTIVE_ADAPTER_KEY, KEY_PREFIX
from core.prompting import PROMPT_VERSION
from core.schema import SCHEMA_VERSION
from core.settings import Settings

__all__ = ["FolderStore", "Record", "RedisStore", "Registry", "Promotion", "Decision",
           "should_promote", "check_compatible", "verify_files", "redis_from_settings",
           "check_adapter_folder"]

log = logging.getLogger("tiqu.adapters")

VERSIONS_KEY = KEY_PREFIX + "adapters:versions"
HISTORY_KEY = KEY_PREFIX + "adapters:history"
WORKER_KEY_PREFIX = KEY_PREFIX + "workers:"
#: The active-key value that means "serve the base model, no adapter".
BASE = "none"
#: Versions that cannot be published: they mean the base model, or the adapter a
#: worker was started with (``TIQU_ADAPTER``), in envelopes.
RESERVED = frozenset({"", BASE, "local"})
CACHE_DIRNAME = "adapter-cache"
#: A record is a manifest with metrics and at most three sha256s: far under this.
MAX_RECORD_BYTES = 1 << 20


def worker_key(worker: str) -> str:
    """The Redis hash where a worker reports what it serves and its last swap error."""
    return WORKER_KEY_PREFIX + worker


def _text(value: bytes | str) -> str:
    # A forged value need not be UTF-8; the version check refuses what it decodes to.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def wanted_version(raw: bytes | str) -> str | None:
    """The adapter an active-key value asks for; ``None`` for the base model."""
    value = _text(raw)
    return None if value in ("", BASE) else value


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Promotion(BaseModel):
    """One change of the active version: when, from, to and why."""

    at: str
    from_version: str | None
    to_version: str
    reason: str = ""
    kind: Literal["promote", "rollback"] = "promote"


def check_version_name(version: str) -> None:
    """Raise ConfigError unless ``version`` can be published."""
    if version in RESERVED:
        raise ConfigError(f"adapter version {version!r} is not valid: "
                          f"{sorted(RESERVED)} are reserved")
    check_version("adapter version", version, ConfigError)


def check_compatible(manifest: Manifest, base_hash: str,
                     prompt_version: str = PROMPT_VERSION,
                     schema_version: str = SCHEMA_VERSION) -> None:
    """Raise IncompatibleAdapter naming every mismatch between an adapter and a worker."""
    pairs = [
        ("base model hash", manifest.base_model_hash, base_hash),
        ("prompt version", manifest.prompt_version, prompt_version),
        ("schema version", manifest.schema_version, schema_version),
    ]
    problems = [f"adapter {what} {theirs!r} != worker {what} {ours!r}"
                for what, theirs, ours in pairs if theirs != ours]
    if problems:
        raise IncompatibleAdapter(f"adapter {manifest.version}: " + "; ".join(problems))


class Registry:
    """Publish, look up, promote and roll back adapter versions; fetch them to a
    verified local cache (``settings.cache_dir/adapter-cache/<version>``)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.cache_root = settings.cache_dir / CACHE_DIRNAME

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(redis_from_settings(settings), settings)

    def store(self, name: str) -> Store:
        if name == "redis":
            return RedisStore(self.client)
        return FolderStore(self.settings.adapters_dir)

    # --- versions -------------------------------------------------------------
    def publish(self, src: Path, version: str | None = None) -> Record:
        """Store ``src/adapter`` under a new version (``version`` or the manifest's)
        in ``settings.adapter_store`` and register it. Never changes the active version."""
        if not (src / MANIFEST_NAME).is_file():
            raise ModelNotFound(f"{src} has no {MANIFEST_NAME}; publish the folder the trainer "
                                "wrote (adapter/ + manifest.json)")
        manifest = Manifest.load(src)
        version = version or manifest.version
        check_version_name(version)
        if self.client.hexists(VERSIONS_KEY, version):
            raise ConfigError(f"adapter version {version!r} is already published; pick another")
        manifest.version = version
        files = adapter_files(src, manifest)
        manifest.files = files
        folder = check_adapter_folder(src / ADAPTER_DIRNAME)
        key = self._signing_key()
        store = self.store(self.settings.adapter_store)
        location, chunks = store.put(version, folder, files, manifest)
        record = Record(version=version, store=store.name, location=location,
                        published_at=now_iso(), chunks=chunks, manifest=manifest,
                        size_bytes=sum((folder / rel).stat().st_size for rel in files),
                        signature=sign(key, version, files) if key else "")
        if not self.client.hsetnx(VERSIONS_KEY, version, record.model_dump_json()):
            raise ConfigError(f"adapter version {version!r} was published meanwhile; pick another")
        log.info("published adapter %s (%d bytes, %s store%s)", version, record.size_bytes,
                 store.name, ", signed" if key else "")
        return record

    def _signing_key(self) -> str | None:
        key = self.settings.adapter_signing_key
        return key.get_secret_value() or None if key is not None else None

    def get(self, version: str, verify: bool = False) -> Record:
        """The record published as ``version``, refused (IncompatibleAdapter, naming the
        field) unless :func:`check_record` passes; with ``verify`` and a signing key
        set, also unless it carries that key's signature."""
        check_version("adapter version", version)
        size = self.client.hstrlen(VERSIONS_KEY, version)
        if size > MAX_RECORD_BYTES:  # checked before the read: a forged record may be huge
            raise IncompatibleAdapter(f"adapter {version} record is {size} bytes > limit "
                                      f"{MAX_RECORD_BYTES}")
        raw = self.client.hget(VERSIONS_KEY, version)
        if raw is None:
            raise ModelNotFound(f"adapter version {version!r} is not published")
        try:
            record = Record.model_validate_json(raw)
        except ValidationError as err:
            where = ".".join(str(p) for p in err.errors()[0]["loc"])
            raise IncompatibleAdapter(f"adapter {version} record is not valid: {err.error_count()}"
                                      f" errors, the first at {where!r}") from err
        check_record(record, version)
        key = self._signing_key()
        if verify and key:
            check_signature(key, version, record.manifest.files, record.signature)
        return record

    def versions(self) -> list[Record]:
        """Every published version that passes :meth:`get`'s checks, oldest first;
        the others are logged and left out."""
        records = []
        for field in self.client.hkeys(VERSIONS_KEY):
            try:
                records.append(self.get(_text(field)))
            except (IncompatibleAdapter, ModelNotFound) as err:
                log.warning("adapter record left out: %s", err)
        return sorted(records, key=lambda r: r.published_at)

    # --- the active version ---------------------------------------------------
    def active(self) -> str | None:
        """The active key's value: a version, ``"none"``/``""`` (base), or None if unset."""
        raw = self.client.get(ACTIVE_ADAPTER_KEY)
        return None if raw is None else _text(raw)

    def history(self, limit: int | None = None) -> list[Promotion]:
        """Promotions, oldest first (the last ``limit`` if given)."""
        start = -limit if limit else 0
        return [Promotion.model_validate_json(r)
                for r in self.client.lrange(HISTORY_KEY, start, -1)]

    def promote(self, version: str, reason: str = "") -> Promotion:
        """Make ``version`` (or ``"none"``, the base model) active and record why."""
        if version != BASE:
            self.get(version, verify=True)
        return self._switch(lambda _history: version, reason, "promote")

    def rollback(self, reason: str = "") -> Promotion:
        """Go back to the version active before the latest promotion still in force.

        Rollbacks undo promotions like a stack: promote a, promote b, rollback,
        rollback leaves the base model (``"none"``) active.
        """
        return self._switch(_previous, reason or "rollback", "rollback")

    def _switch(self, target: Callable[[list[Promotion]], str], reason: str,
                kind: Literal["promote", "rollback"]) -> Promotion:
        """Set the active key and append the history entry in one transaction."""
        def apply(pipe: Any) -> Promotion:
            old = pipe.get(ACTIVE_ADAPTER_KEY)
            history = [Promotion.model_validate_json(r) for r in pipe.lrange(HISTORY_KEY, 0, -1)]
            entry = Promotion(at=now_iso(), from_version=old.decode() if old else None,
                              to_version=target(history), reason=reason, kind=kind)
            pipe.multi()
            pipe.set(ACTIVE_ADAPTER_KEY, entry.to_version)
            pipe.rpush(HISTORY_KEY, entry.model_dump_json())
            return entry

        # redis-py types the callable as returning None; value_from_callable returns ours.
        run: Any = self.client.transaction
        entry = cast(Promotion, run(apply, ACTIVE_ADAPTER_KEY, HISTORY_KEY,
                                    value_from_callable=True))
        log.info("%s: active adapter %s -> %s", kind, entry.from_version, entry.to_version)
        return entry

    def promote_if_better(self, version: str, margin: float | None = None,
                          active_metrics: dict[str, Any] | None = None,
                          reason: str = "") -> tuple[Decision, Promotion | None]:
        """Promote ``version`` only if :func:`should_promote` agrees.

        ``active_metrics`` defaults to the active version's manifest metrics;
        pass the active adapter's scores on the same eval set when you have them.
        """
        new = self.get(version).manifest.metrics
        if active_metrics is None:
            current = wanted_version(self.active() or "")
            active_metrics = self.get(current).manifest.metrics if current else None
        margin = self.settings.adapter_promote_margin if margin is None else margin
        decision = should_promote(new, active_metrics, margin)
        if not decision.promote:
            return decision, None
        why = f"{reason}; {decision.reason}" if reason else decision.reason
        return decision, self.promote(version, why)

    # --- local cache ------------------------------------------------------------
    def fetch(self, version: str) -> Path:
        """A local folder holding ``version``'s adapter files, every sha256 checked.

        The record passes :meth:`get` (with the signature) first, and every path
        is proven inside the cache before a write or delete. Files download into
        a temporary folder inside the cache that becomes ``<version>`` only when
        every sha256 matches, and is removed otherwise. A cached copy is checked
        too, and downloaded again if it fails.
        """
        record = self.get(version, verify=True)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        final = inside(self.cache_root, version)
        if final.exists():
            try:
                verify_files(final, record.manifest.files, version)
                return final
            except IncompatibleAdapter as err:
                log.warning("cached adapter failed its check, downloading again: %s", err)
                shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.cache_root))
        try:
            self.store(record.store).get(record, tmp)
            verify_files(tmp, record.manifest.files, version)
            try:
                tmp.rename(final)
            except OSError:  # another worker on this node cached it first
                verify_files(final, record.manifest.files, version)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def worker_states(self) -> list[dict[str, str]]:
        """What each worker last reported (serving version, last swap error)."""
        keys = sorted(self.client.scan_iter(match=WORKER_KEY_PREFIX + "*"))
        states = []
        for key in keys:
            raw = self.client.hgetall(key)
            states.append({_text(k): _text(v) for k, v in raw.items()})
        return states


def _previous(history: list[Promotion]) -> str:
    """The version a rollback returns to: replay history as a stack of promotions."""
    stack: list[str] = []
    for entry in history:
        if entry.kind == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(entry.to_version)
    if not stack:
        raise ConfigError("no promotion to roll back: the history has none still in force")
    return stack[-2] if len(stack) >= 2 else BASE


# --- the promotion gate ---------------------------------------------------------

#: Metric names that are not "higher is better" scores and are never compared.
_NOT_SCORES = re.compile(r"(^n$|^n_|_n$|count|loss|_s$|_ms$|_tokens$|_bytes$|steps)")
#: A metric naming the evaluation set (e.g. its sha256); scores on different sets
#: are never compared.
EVAL_SET_KEY = "eval_set"


@dataclass(frozen=True)
class Decision:
    """The promotion gate's answer and a reason a person can read."""

    promote: bool
    reason: str


def score_keys(new: dict[str, Any], active: dict[str, Any]) -> list[str]:
    """Numeric metrics present in both, except counts, timings and losses."""
    def numeric(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    return sorted(k for k in new.keys() & active.keys()
                  if numeric(new[k]) and numeric(active[k]) and not _NOT_SCORES.search(k))


def should_promote(new_metrics: dict[str, Any], active_metrics: dict[str, Any] | None,
                   margin: float = 0.0, keys: list[str] | None = None) -> Decision:
    """Promote when every score is no worse than the active one's, less ``margin``.

    Scores are higher-is-better metrics measured on the same eval set: both
    dicts' ``eval_set`` must agree when both carry one. ``keys`` defaults to
    :func:`score_keys`. ``margin`` > 0 tolerates that much drop in each score;
    ``margin`` < 0 demands that much gain. With no active adapter
    (``active_metrics`` None) the answer is yes.
    """
    if active_metrics is None:
        return Decision(True, "no active adapter to compare with")
    new_set, old_set = new_metrics.get(EVAL_SET_KEY), active_metrics.get(EVAL_SET_KEY)
    if new_set is not None and old_set is not None and new_set != old_set:
        return Decision(False, f"eval set {new_set!r} != active eval set {old_set!r}")
    keys = keys if keys is not None else score_keys(new_metrics, active_metrics)
    missing = [k for k in keys if k not in new_metrics or k not in active_metrics]
    if missing or not keys:
        return Decision(False, f"no common scores to compare (missing: {missing})")
    worse = [f"{k} {new_metrics[k]:.4g} < active {active_metrics[k]:.4g} - margin {margin:g}"
             for k in keys if new_metrics[k] < active_metrics[k] - margin]
    if worse:
        return Decision(False, "worse than active: " + "; ".join(worse))
    shown = ", ".join(f"{k} {new_metrics[k]:.4g} vs {active_metrics[k]:.4g}" for k in keys)
    return Decision(True, f"no worse than active (margin {margin:g}): {shown}")
