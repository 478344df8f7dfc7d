"""Turn a batch of raw task payloads into result envelopes.

Validation, the engine call, grounding and envelope building live here, with
no broker involved, so they are tested directly. Logs carry ids, lengths and
codes, never complaint text or extracted values.

An engine call that raises is not turned into envelopes: :meth:`Runtime.handle`
raises :class:`workers.breaker.EngineFailed` and counts the failure on the
runtime's :class:`workers.breaker.Breaker`; the batch's messages go back on the
queue (workers.batching). Per-text problems (invalid input, invalid model
output, a text that alone still runs out of memory) are still answered.
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
from core.transport import faults
from core.validation import grounding, payload_id, validate_payload
from inference.engine import Outcome, field_scores
from workers.breaker import Breaker, EngineFailed

log = logging.getLogger("tiqu.worker")

#: A complaint every engine answers; run after a failed batch to tell a sick
#: engine from texts that break a sound one (Runtime._after_failure).
CANARY = "张三，北京市朝阳区建国路88号，zhangsan@example.com。家里宽带断网三天了，请尽快修复。"

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
    breaker: Breaker = field(default_factory=Breaker)
    _engine: Any = None

    def __post_init__(self) -> None:
        self.breaker.limit = self.settings.breaker_failures

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
        faults.slow_model(self._engine.model)  # armed for tests only
        log.info("model %s loaded in %.1f s (adapter %s)", self._engine.model_id,
                 self._engine.stats.model_load_s, self._engine.adapter_version)

    def handle(self, items: list[tuple[str, Any]],
               on_envelope: Callable[[int, dict[str, Any]], None] | None = None,
               more: Callable[[], list[tuple[str, Any]]] | None = None,
               ) -> list[dict[str, Any]]:
        """``[(task_id, payload)]`` -> one envelope dict per item, same order.

        ``on_envelope(i, envelope)``, when given, hears of item ``i``'s envelope as
        soon as the engine is done with it (copy decoding on the continuous
        scheduler: before the rest of the batch; inference.continuous), so that
        it can be stored at once; every envelope is returned all the same.

        ``more()``, when given, is asked for more items while the batch runs, as
        rows of the continuous scheduler free up; they are numbered on after
        ``items`` (in ``on_envelope`` and in the result), and each one's
        ``latency_ms`` counts from when it joined.

        Raises :class:`EngineFailed` when the engine fails the batch as a whole;
        a before-batch hook that raises (an adapter check) is logged and never
        counts as an engine failure.
        """
        for hook in self.before_batch:
            try:
                hook(self)
            except Exception as err:  # the old adapter keeps serving
                log.error("before-batch hook failed: %s: %s", type(err).__name__, err)
        start = time.perf_counter()
        items = list(items)
        starts = [start] * len(items)
        envelopes: list[Envelope | None] = [None] * len(items)
        valid: list[tuple[int, str | None, str]] = []
        logged: set[int] = set()

        def done(i: int, env: dict[str, Any]) -> dict[str, Any]:
            """One log line per task run, before its result is stored (``tiqu soak``
            counts executions from these lines)."""
            log.info("task %s id=%s status=%s code=%s", items[i][0], env["id"], env["status"],
                     (env.get("error") or {}).get("code"))
            logged.add(i)
            return env

        def admit(first: int) -> list[str]:
            """Validate items ``first:``; the valid ones' texts, the rest answered."""
            texts = []
            for i in range(first, len(items)):
                payload = items[i][1]
                try:
                    id_, text = validate_payload(payload, self.settings.max_text_chars)
                except InvalidInput as err:
                    envelopes[i] = refused = self._error(payload_id(payload), err, starts[i])
                    if on_envelope is not None and first:  # a joiner: stored at once
                        on_envelope(i, done(i, refused.model_dump(mode="json")))
                    continue
                valid.append((i, id_, text))
                texts.append(text)
            return texts

        texts = admit(0)
        faults.point("mid_batch")
        early = None
        if on_envelope is not None:
            def early(j: int, outcome: Outcome) -> None:
                i, id_, text = valid[j]
                on_envelope(i, done(i, self._envelope(id_, text, outcome, starts[i]).model_dump(
                    mode="json")))
        source = None
        if more is not None:
            def source() -> list[str]:
                new = more()
                if not new:
                    return []
                first = len(items)
                items.extend(new)
                now = time.perf_counter()
                starts.extend([now] * len(new))
                envelopes.extend([None] * len(new))
                return admit(first)
        outcomes = self._extract(texts, early, source)
        for (i, id_, text), outcome in zip(valid, outcomes, strict=True):
            envelopes[i] = self._envelope(id_, text, outcome, starts[i])
        out = [e.model_dump(mode="json") for e in envelopes if e is not None]
        for i, (_, env) in enumerate(zip(items, out, strict=True)):  # every item has one now
            if i not in logged:
                done(i, env)
        for result_hook in self.after_batch:
            result_hook(self, out, time.perf_counter() - start)
        return out

    def _extract(self, texts: list[str],
                 on_done: Callable[[int, Outcome], None] | None = None,
                 source: Callable[[], list[str]] | None = None) -> list[Outcome]:
        """The engine's outcomes for ``texts`` and, with ``source``, for the texts that
        joined meanwhile (appended to ``texts``, so a failure accounts for them too)."""
        if not texts:
            return []
        joining = None
        if source is not None:
            def joining() -> list[str]:
                new = source()
                texts.extend(new)
                return new
        try:
            outcomes = self._call(list(texts), on_done, joining)
        except Exception as err:  # the engine's fault or the texts'? the canary tells
            return self._after_failure(texts, err)
        self.breaker.success()
        return outcomes

    def _call(self, texts: list[str],
              on_done: Callable[[int, Outcome], None] | None = None,
              source: Callable[[], list[str]] | None = None) -> list[Outcome]:
        if faults.engine_fails(texts):  # a fault armed for tests
            raise RuntimeError("CUDA error: the engine fault point is armed")
        if on_done is not None and getattr(self.engine, "continuous", None) is not None:
            return list(self.engine.extract_batch(texts, on_done=on_done, source=source))
        return list(self.engine.extract_batch(texts))

    def _after_failure(self, texts: list[str], err: Exception) -> list[Outcome]:
        """Tell a sick engine from texts that break a sound one.

        The engine runs :data:`CANARY`, a text it has always answered. If that
        fails too, the engine is sick: the batch is not answered
        (:class:`EngineFailed`, counted by the breaker) and goes back on the
        queue, however often that happens, so a broken device never turns the
        backlog into errors. If the canary runs, the engine is sound: each text
        runs again alone, and only a text that still fails alone is answered
        ``internal_error``.
        """
        if not self._sound():
            self.breaker.failure()
            log.error("engine failed a batch of %d and the canary: %s (%d in a row)",
                      len(texts), type(err).__name__, self.breaker.failures, exc_info=err)
            raise EngineFailed(f"extraction failed: {type(err).__name__}") from err
        self.breaker.success()
        log.warning("engine failed a batch of %d (%s) but runs the canary: one text at a time",
                    len(texts), type(err).__name__)
        return [self._alone(t) for t in texts]

    def _sound(self) -> bool:
        try:
            self._call([CANARY])
            return True
        except Exception:  # the error that matters is logged by the caller
            return False

    def _alone(self, text: str) -> Outcome:
        try:
            return self._call([text])[0]
        except Exception as err:  # this text breaks a sound engine: the input's fault
            log.error("a text of %d chars fails alone on a sound engine: %s", len(text),
                      type(err).__name__)
            return Outcome(error=TiquError(f"extraction failed for this text: "
                                           f"{type(err).__name__}"))

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
        scores = field_scores(outcome, getattr(self._engine, "calibration", None),
                              self.settings.review_below)
        return Envelope(id=id_, status="ok", result=outcome.complaint,
                        grounded=grounding(outcome.complaint, text), spans=scores.spans,
                        confidence=scores.confidence, calibrated=scores.calibrated,
                        review=scores.review, **self._common(start))
