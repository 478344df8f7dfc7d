"""The ``tiqu.train`` task (queue ``train``): parse a request, train, return the manifest.

The task is thin: :class:`TrainRequest` checks the payload, :func:`trainer.lora.train`
does the work. Progress is stored as Celery state ``PROGRESS`` with meta
``{"phase", "step", "total", "loss"}``, so any client can follow a run with
``AsyncResult(task_id).info``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError, DataError, TiquError
from core.names import TRAIN_TASK
from core.settings import Settings
from trainer.data import Record, load_records, parse_row
from trainer.lora import TrainConfig

log = logging.getLogger("tiqu.train")

#: Inline data travels inside the broker message; larger sets go by path.
MAX_INLINE_ROWS = 5000


class TrainRequest(BaseModel):
    """One training job: data by ``data`` (a path the worker can read) or inline ``records``.

    ``records`` rows may be in any format :func:`trainer.data.parse_row` reads.
    ``out`` defaults to ``<adapters_dir>/runs/<task id>`` on the worker.
    """

    model_config = ConfigDict(extra="forbid")

    data: str | None = None
    records: list[dict[str, Any]] | None = Field(None, max_length=MAX_INLINE_ROWS)
    out: str | None = None
    config: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _one_source(self) -> TrainRequest:
        if (self.data is None) == (self.records is None):
            raise ValueError("give exactly one of 'data' (a path) or 'records' (inline rows)")
        return self

    def load(self) -> list[Record]:
        """The request's records; raises :class:`DataError` listing every bad row."""
        if self.data is not None:
            return load_records(self.data)
        records, problems = [], []
        for number, row in enumerate(self.records or [], start=1):
            record, found = parse_row(row)
            problems += [f"row {number}: {p}" for p in found]
            if record is not None:
                records.append(record)
        if problems:
            listing = "\n".join(f"  {p}" for p in problems)
            raise DataError(f"inline records: {len(problems)} bad row(s):\n{listing}")
        return records


def parse_request(payload: Any) -> TrainRequest:
    """A :class:`TrainRequest` from a task payload; bad payloads raise :class:`ConfigError`."""
    try:
        return TrainRequest.model_validate(payload)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid train request: {problems}") from err


class StateReporter:
    """Stores ``PROGRESS`` states, at most one per ``min_interval_s`` within a phase.

    A phase change and the last step of a phase are always stored, so a client
    polling the result sees each phase.
    """

    def __init__(self, task: Any, min_interval_s: float = 0.5) -> None:
        self.task = task
        self.min_interval_s = min_interval_s
        self.phase: str | None = None
        self.last_s = 0.0

    def __call__(self, meta: dict[str, Any]) -> None:
        now = time.monotonic()
        changed = meta.get("phase") != self.phase
        final = meta.get("step") == meta.get("total")
        if changed or final or now - self.last_s >= self.min_interval_s:
            self.task.update_state(state="PROGRESS", meta=meta)
            self.phase, self.last_s = meta.get("phase"), now


def row_numbers_only(err: DataError) -> DataError:
    """The same error with only its row numbers: the worker's log and result never hold
    complaint text or gold values (``tiqu data check FILE`` shows the details)."""
    rows = sorted({int(n) for n in re.findall(r"^\s*row (\d+):", str(err), re.M)})
    if not rows:
        return err
    listed = ", ".join(map(str, rows[:50])) + (" ..." if len(rows) > 50 else "")
    return DataError(f"{len(rows)} bad row(s): rows {listed}; `tiqu data check` shows why")


def run_request(request: TrainRequest, settings: Settings, task_id: str,
                report: Any = None) -> dict[str, Any]:
    """Train as ``request`` says; the manifest as a dict, plus ``run_dir``."""
    from trainer.lora import train

    try:
        records = request.load()
    except DataError as err:
        raise row_numbers_only(err) from None
    out = Path(request.out) if request.out else settings.adapters_dir / "runs" / task_id
    log.info("train task %s: %d rows, output %s", task_id, len(records), out)
    manifest = train(settings, records, out, request.config,
                     on_progress=report, source=request.data)
    return {**manifest.model_dump(mode="json"), "run_dir": str(out)}


def register(app: Any, settings: Settings) -> Any:
    """Register ``tiqu.train`` on ``app``.

    The message is acknowledged when the task starts, not when it ends: a
    training run can outlast the broker's visibility timeout, and a late ack
    would then hand the same run to a second worker while the first still
    trains. A lost run is resubmitted with ``resume`` to continue from its
    checkpoints.
    """

    @app.task(name=TRAIN_TASK, bind=True, acks_late=False, throws=(TiquError,))
    def train_task(self: Any, payload: Any) -> dict[str, Any]:
        request = parse_request(payload)
        return run_request(request, settings, self.request.id or "local", StateReporter(self))

    return train_task
