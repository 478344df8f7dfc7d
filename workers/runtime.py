"""Turn a batch of raw task payloads into result envelopes.

Validation, the engine call, grounding and envelope building live here, with
no broker involved, so they are tested directly. Logs carry ids, lengths and
codes, never complaint text or extracted values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidInput, TiquError
from core.schema import Complaint, Envelope
from core.settings import Settings
from core.validation import grounding, payload_id, validate_payload
from inference.engine import Outcome

log = logging.getLogger("tiqu.worker")

BatchHook = Callable[["Runtime"], None]
ResultHook = Callable[["Runtime", list[dict[str, Any]], float], None]


class EchoEngine:
    """Stands in for the model to measure the queue's own overhead."""

    model_id = "echo"
    adapter_version: str | None = None

    def __init__(self) -> None:
        from inference.engine import Stats

        self.stats = Stats()

    def extract_batch(self, texts: list[str], mode: str | None = None) -> list[Outcome]:
        self.stats.batches += 1
        return [Outcome(complaint=Complaint(name=None, address=None, email=None, question=t))
                for t in texts]


@dataclass
class Runtime:
    """The worker's state: settings, the (lazily loaded) engine and hooks."""

    settings: Settings
    engine_kind: str = "model"
    worker_name: str = ""
    before_batch: list[BatchHook] = field(default_factory=list)
    after_batch: list[ResultHook] = field(default_factory=list)
    _engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self.load()
        return self._engine

    def load(self) -> None:
        """Load the engine once per process (never per task)."""
        if self._engine is not None:
            return
        if self.engine_kind == "echo":
            self._engine = EchoEngine()
            return
        from inference.engine import Engine

        self._engine = Engine(self.settings)
        log.info("model %s loaded in %.1f s (adapter %s)", self._engine.model_id,
                 self._engine.stats.model_load_s, self._engine.adapter_version)

    def handle(self, items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """``[(task_id, payload)]`` -> one envelope dict per item, same order."""
        for hook in self.before_batch:
            hook(self)
        start = time.perf_counter()
        envelopes: list[Envelope | None] = [None] * len(items)
        valid: list[tuple[int, str | None, str]] = []
        for i, (_task_id, payload) in enumerate(items):
            try:
                id_, text = validate_payload(payload, self.settings.max_text_chars)
                valid.append((i, id_, text))
            except InvalidInput as err:
                envelopes[i] = self._error(payload_id(payload), err, start)
        outcomes = self._extract([t for _, _, t in valid])
        for (i, id_, text), outcome in zip(valid, outcomes, strict=True):
            envelopes[i] = self._envelope(id_, text, outcome, start)
        out = [e.model_dump(mode="json") for e in envelopes if e is not None]
        for task_id_env in zip((t for t, _ in items), out, strict=True):
            env = task_id_env[1]
            log.info("task %s id=%s status=%s code=%s", task_id_env[0], env["id"], env["status"],
                     (env.get("error") or {}).get("code"))
        for result_hook in self.after_batch:
            result_hook(self, out, time.perf_counter() - start)
        return out

    def _extract(self, texts: list[str]) -> list[Outcome]:
        if not texts:
            return []
        try:
            return list(self.engine.extract_batch(texts))
        except Exception as err:  # one broken batch must still answer every task
            log.exception("batch of %d failed: %s", len(texts), type(err).__name__)
            return [Outcome(error=TiquError(f"extraction failed: {type(err).__name__}"))
                    for _ in texts]

    def _common(self, start: float) -> dict[str, Any]:
        engine = self._engine
        return {
            "model": getattr(engine, "model_id", self.settings.base_model),
            "adapter_version": getattr(engine, "adapter_version", None),
            "worker": self.worker_name or None,
            "latency_ms": round((time.perf_counter() - start) * 1000, 2),
        }

    def _error(self, id_: str | None, err: TiquError, start: float) -> Envelope:
        return Envelope.failure(id_, err.code, str(err), **self._common(start))

    def _envelope(self, id_: str | None, text: str, outcome: Outcome, start: float) -> Envelope:
        if outcome.complaint is None:
            err = outcome.error or TiquError("no output")
            message = str(err)
            raw_len = getattr(err, "raw_len", None)
            if raw_len is not None:
                message = f"{message}; raw output was {raw_len} chars"
            return Envelope.failure(id_, err.code, message, **self._common(start))
        return Envelope(id=id_, status="ok", result=outcome.complaint,
                        grounded=grounding(outcome.complaint, text), **self._common(start))
