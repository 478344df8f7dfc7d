"""The training worker's metrics port: ``/livez``, ``/readyz`` and run progress.

Served when ``settings.metrics_port`` is set (``TIQU_METRICS_PORT``), from a thread
of the worker process (core.health), so it answers during a run that keeps the
main thread busy for hours:

- ``/livez``: 200 while the process serves;
- ``/readyz``: 200 once the worker consumes the train queue (also during a run;
  ``tiqu status --ready`` asks over Redis instead and gets no answer then);
- the metrics: the run in progress (``tiqu_train_running``, its phase, step, total
  and last loss) and finished runs by outcome. Labels carry no data, paths or
  task ids.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector

from core import health as core_health
from core.names import TRAIN_TASK
from core.settings import Settings

log = logging.getLogger("tiqu.trainer")

#: The phases a run reports (trainer.lora.train's ``on_progress``), in order.
PHASES = ("load", "train", "eval", "gate", "done")


class TrainMetrics:
    """The training worker's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.running = Gauge("tiqu_train_running", "1 while a training run is in progress.",
                             registry=r)
        self.phase = Gauge("tiqu_train_phase", "1 for the phase of the run in progress.",
                           ["phase"], registry=r)
        self.step = Gauge("tiqu_train_step", "Step of the run in progress, within its phase.",
                          registry=r)
        self.total = Gauge("tiqu_train_total_steps", "Steps of the run's phase in progress.",
                           registry=r)
        self.loss = Gauge("tiqu_train_loss", "Last training loss reported by the run.",
                          registry=r)
        self.runs = Counter("tiqu_train_runs", "Training tasks finished, by Celery state "
                            "(SUCCESS, FAILURE, RETRY).", ["state"], registry=r)
        self.last_run = Gauge("tiqu_train_last_run_timestamp_seconds",
                              "Unix time the last training task finished.", registry=r)
        self.ready = False

    def progress(self, meta: dict[str, Any]) -> None:
        """trainer.tasks.PROGRESS_HOOKS: one progress report of the run."""
        phase = str(meta.get("phase") or "")
        for p in PHASES:
            self.phase.labels(phase=p).set(1.0 if p == phase else 0.0)
        for gauge, key in ((self.step, "step"), (self.total, "total"), (self.loss, "loss")):
            value = meta.get(key)
            if isinstance(value, int | float):
                gauge.set(float(value))

    def started(self) -> None:
        self.running.set(1)
        self.step.set(0)
        self.loss.set(float("nan"))

    def finished(self, state: str) -> None:
        self.running.set(0)
        for p in PHASES:
            self.phase.labels(phase=p).set(0.0)
        self.runs.labels(state=state).inc()
        self.last_run.set(time.time())

    def status(self) -> tuple[bool, bool, str]:
        return True, self.ready, "not consuming yet"


def install(app: Any, settings: Settings) -> TrainMetrics | None:
    """Serve the training worker's metrics on ``settings.metrics_port``; nothing when
    unset. The port opens when the worker process is set up."""
    if settings.metrics_port is None:
        return None
    from trainer import tasks

    metrics = TrainMetrics()
    tasks.PROGRESS_HOOKS.append(metrics.progress)

    def _start(**_: Any) -> None:
        try:
            core_health.start_server(settings.metrics_port or 0, settings.metrics_addr,
                                     core_health.health_app(metrics.registry, metrics.status))
        except OSError as err:  # logged, not fatal: the worker still trains
            log.error("metrics: cannot bind %s:%s: %s", settings.metrics_addr,
                      settings.metrics_port, err)
            return
        log.info("metrics: serving on %s:%d", settings.metrics_addr, settings.metrics_port)

    def _ready(**_: Any) -> None:
        metrics.ready = True

    def _prerun(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) == TRAIN_TASK:
            metrics.started()

    def _postrun(sender: Any = None, state: str | None = None, **_: Any) -> None:
        if getattr(sender, "name", None) == TRAIN_TASK:
            metrics.finished(state or "UNKNOWN")

    signals.celeryd_after_setup.connect(_start, weak=False)
    signals.worker_ready.connect(_ready, weak=False)
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    return metrics
