"""Adapter hot swap between batches.

Before every batch the worker reads the active version (``tiqu:adapters:active``)
with ONE Redis GET and compares it with the adapter its engine serves. When
they are equal, or the active version is one this worker already refused,
nothing else happens. When they differ the worker fetches the adapter into
its verified local cache, checks the manifest against its base model hash,
PROMPT_VERSION and SCHEMA_VERSION, loads it, makes it active and frees the
old one (``Engine.load_adapter``). An empty active version or ``"none"`` means
the base model; no active key at all leaves the worker serving what it started
with.

The check runs at the start of ``Runtime.handle``, and the ``tiqu_swap``
control command runs on the same event-loop thread, so a swap never happens
in the middle of a batch. Any failure leaves the old adapter serving, is
logged and reported in the Redis hash ``tiqu:workers:<name>`` (and in the
control command's reply), and the refused version is not tried again until
the active key changes or a ``tiqu_swap`` broadcast asks for a retry.

The active key and the records are hostile input (anyone with the Redis
password can write them): the registry refuses bad names, paths that leave
their folder, non-safetensors weights and, with a signing key, unsigned or
wrongly signed records, all as ordinary refusals. A forged version is shown
clipped in logs and reports.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals
from celery.worker.control import control_command

from core.adapters import (
    BASE,
    Registry,
    check_compatible,
    now_iso,
    wanted_version,
    worker_key,
)
from core.manifest import VERSION_RE, shown
from core.names import ACTIVE_ADAPTER_KEY
from core.settings import Settings
from core.transport import faults

log = logging.getLogger("tiqu.hotswap")

COMMAND = "tiqu_swap"


def label(want: str | None) -> str:
    """A version as logs and reports show it: as is when valid, else clipped repr."""
    text = want or BASE
    return text if text == BASE or VERSION_RE.fullmatch(text) else shown(text, 60)


class Swapper:
    """Keeps one worker's engine on the active adapter version."""

    def __init__(self, runtime: Any, registry: Registry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.lock = threading.Lock()
        self.refused: str | None = None
        self.last_error = ""
        self.swaps = 0

    @property
    def engine(self) -> Any:
        """The loaded engine, or None (not loaded yet, or one that cannot take adapters)."""
        engine = getattr(self.runtime, "_engine", None)
        return engine if hasattr(engine, "load_adapter") else None

    def before_batch(self, _runtime: Any = None) -> None:
        """The per-batch check: one GET; a swap only when the active version changed.

        Never raises: a Redis outage or a bad adapter must not fail the batch.
        """
        try:
            raw = self.registry.client.get(ACTIVE_ADAPTER_KEY)
            engine = self.engine
            if raw is None or engine is None:
                return
            want = wanted_version(raw)
            if want == engine.adapter_version or (want or BASE) == self.refused:
                return
            with self.lock:
                self._follow(engine, want, force=False)
                self.report()
        except Exception as err:  # keep serving; the next batch checks again
            log.warning("adapter check failed: %s: %s", type(err).__name__, err)

    def sync(self, force: bool = False) -> dict[str, Any]:
        """Read the active key and swap to it if needed; ``force`` retries a version
        refused before. Reports and returns this worker's state."""
        with self.lock:
            engine = self.engine
            if engine is not None:
                raw = self.registry.client.get(ACTIVE_ADAPTER_KEY)
                if raw is not None:
                    self._follow(engine, wanted_version(raw), force)
            return self.report()

    def _follow(self, engine: Any, want: str | None, force: bool) -> None:
        label = want or BASE
        if label != self.refused:
            self.refused = None  # the active key moved on; forget the refusal
        if want != engine.adapter_version and (force or label != self.refused):
            self._swap(engine, want)

    def _swap(self, engine: Any, want: str | None) -> None:
        old = engine.adapter_version
        try:
            if want is None:
                engine.use_base()
            else:
                record = self.registry.get(want, verify=True)
                check_compatible(record.manifest, engine.base_hash)
                path = self.registry.fetch(want)
                faults.point("in_swap")  # fetched and verified, not yet serving
                engine.load_adapter(str(path), version=want,
                                    calibration=record.manifest.calibration)
        except Exception as err:
            self.refused, self.last_error = want or BASE, f"{label(want)}: {err}"
            log.error("adapter %s refused, still serving %s: %s", label(want), label(old), err)
            return
        self.refused, self.last_error = None, ""
        self.swaps += 1
        log.info("adapter swapped %s -> %s", old or BASE, want or BASE)

    def report(self) -> dict[str, Any]:
        """Write this worker's state to ``tiqu:workers:<name>`` (TTL: the result TTL) and
    return it."""
        engine = self.engine
        state: dict[str, str | int] = {
            "worker": self.runtime.worker_name,
            "serving": (engine.adapter_version or BASE) if engine is not None else "",
            "refused": label(self.refused) if self.refused else "",
            "last_error": self.last_error,
            "swaps": self.swaps,
            "updated_at": now_iso(),
        }
        if self.runtime.worker_name and engine is not None:
            try:
                # Kept as long as a result: a dead worker's report goes away by itself.
                key = worker_key(self.runtime.worker_name)
                pipe = self.registry.client.pipeline(transaction=False)
                pipe.hset(key, mapping=dict[Any, Any](state))
                pipe.expire(key, self.registry.settings.result_ttl_s)
                pipe.execute()
            except Exception as err:  # reporting must not stop serving
                log.warning("could not report adapter state: %s", type(err).__name__)
        return state

    def forget(self) -> None:
        """Drop this worker's report (clean shutdown)."""
        if self.runtime.worker_name:
            try:
                self.registry.client.delete(worker_key(self.runtime.worker_name))
            except Exception as err:
                log.warning("could not remove adapter state: %s", type(err).__name__)


def install(app: Any, runtime: Any, settings: Settings) -> None:
    """Register the before-batch swap check and the broadcast control command."""
    swapper = Swapper(runtime, Registry.from_settings(settings))
    runtime.before_batch.append(swapper.before_batch)

    @control_command(name=COMMAND, args=[("force", bool)], signature="[force=True]")
    def tiqu_swap(state: Any, force: bool = True, **_: Any) -> dict[str, Any]:
        """Swap to the active adapter now (retrying a refused one); reply with what is served."""
        result = swapper.sync(force=force)
        if swapper.engine is None:
            result["note"] = "no extraction model on this worker"
        return result

    def on_ready(**_: Any) -> None:
        # A worker that starts after a promotion serves the active version
        # before its first batch, and reports itself.
        try:
            swapper.sync()
        except Exception as err:  # Redis unreachable: the per-batch check catches up
            log.warning("adapter check at start failed: %s: %s", type(err).__name__, err)

    def on_shutdown(**_: Any) -> None:
        swapper.forget()

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
