"""The ``tiqu.train`` task (queue ``train``): parse a request, train, return the manifest.

The task is thin: :class:`TrainRequest` checks the payload, :func:`trainer.lora.train`
does the work. Progress is stored as Celery state ``PROGRESS`` with meta
``{"phase", "step", "total", "loss"}``, so any client can follow a run with
``AsyncResult(task_id).info``.

What a queue message may ask for is bounded: ``data`` must be a regular file
below ``Settings.train_data_root`` and ``out`` a folder below
``Settings.train_runs_root`` (both resolved, symlinks followed), and rows and
data sets have size limits. Inline records are personal data: neither the log
nor an error names more than row numbers and field names.

A run survives the death of its worker: the message is acknowledged when the
run ends, so a killed worker's message is delivered again (after the broker's
visibility timeout, or sooner by a dead-worker sweep), and the new delivery
resumes from the last checkpoint in the same run folder. A lease in Redis,
refreshed while the run trains, keeps a second delivery of a run that is still
alive from training the same folder twice: it retries later, and finds the
finished run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.adapters import check_version_name
from core.errors import ConfigError, DataError, TiquError
from core.manifest import MANIFEST_NAME, Manifest
from core.names import KEY_PREFIX, TRAIN_TASK
from core.settings import Settings
from trainer.data import (
    DataTooLarge,
    Record,
    SizeLimits,
    load_records,
    parse_row,
    row_bytes,
    synth_records,
)
from trainer.lora import CHECKPOINTS, TrainConfig

log = logging.getLogger("tiqu.train")

#: Inline data travels inside the broker message; larger sets go by path.
MAX_INLINE_ROWS = 5000
#: Redis key prefix of the lease a live run holds on its run folder.
LEASE_PREFIX = KEY_PREFIX + "train:lease:"


class PathRefused(ConfigError):
    """A ``data`` or ``out`` path that resolves outside its configured root, or is no
    regular file; the message names the field and the root."""

    code = "path_refused"


def confine(value: str, root: Path, field: str, env: str, regular_file: bool) -> Path:
    """``value`` resolved (symlinks followed) when it lies strictly below ``root``.

    Relative values are taken from ``root``. Raises :class:`PathRefused`
    otherwise, or when ``regular_file`` and it is not an existing regular file.
    """
    base = root.resolve()
    path = (base / value).resolve()
    if path == base or not path.is_relative_to(base):
        raise PathRefused(f"{field}: {value!r} is outside {base} ({env}); "
                          f"the train task reads and writes only below it")
    if regular_file:
        try:
            mode = path.stat().st_mode
        except OSError as err:
            raise PathRefused(f"{field}: {value!r} does not exist below {base} ({env})") from err
        if not stat.S_ISREG(mode):
            raise PathRefused(f"{field}: {value!r} is not a regular file (below {base}, {env})")
    return path


def size_limits(settings: Settings) -> SizeLimits:
    """The train task's row and total limits."""
    return SizeLimits(settings.train_max_row_bytes, settings.train_max_total_bytes)


class TrainRequest(BaseModel):
    """One training job: data by ``data`` (a path the worker can read) or inline ``records``.

    ``records`` rows may be in any format :func:`trainer.data.parse_row` reads;
    ``synth_rows`` asks for that many rows of the synthetic generator (extended
    layouts, seed 1) instead, the replay data of a retrain.
    ``out`` defaults to ``<train_runs_root>/<task id>`` on the worker.

    A retrain (trainer.retrain) names ``from_adapter``: a published version or
    ``active``, never a path. ``corrections`` adds the stored corrections
    (core.corrections) to the rows; ``promote_if_better`` publishes the run and
    promotes it when it passes the gate.
    """

    model_config = ConfigDict(extra="forbid")

    data: str | None = None
    records: list[dict[str, Any]] | None = Field(None, max_length=MAX_INLINE_ROWS)
    synth_rows: int | None = Field(None, ge=1, le=MAX_INLINE_ROWS)
    out: str | None = None
    config: TrainConfig = Field(default_factory=TrainConfig)
    from_adapter: str | None = None
    corrections: bool = False
    correction_share: float | None = Field(None, gt=0, lt=1)
    promote_if_better: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TrainRequest:
        given = [x is not None for x in (self.data, self.records, self.synth_rows)]
        if sum(given) != 1:
            raise ValueError("give exactly one of 'data' (a path), 'records' (inline rows) "
                             "or 'synth_rows' (a number of synthetic rows)")
        if self.from_adapter is not None and self.from_adapter != "active":
            try:
                check_version_name(self.from_adapter)  # a version, never a path
            except ConfigError as err:
                raise ValueError(str(err)) from None
        if self.from_adapter is None and (self.corrections or self.promote_if_better
                                          or self.correction_share is not None):
            raise ValueError("corrections, correction_share and promote_if_better are "
                             "for a retrain: name from_adapter")
        return self

    def load(self, limits: SizeLimits | None = None, data: Path | None = None) -> list[Record]:
        """The request's records; raises :class:`DataError` listing every bad row.

        ``data`` replaces the request's path (the task passes the confined one);
        rows and the whole set over ``limits`` raise :class:`DataTooLarge`.
        """
        limits = limits or SizeLimits()
        if self.synth_rows is not None:
            return synth_records(self.synth_rows, seed=1, extended=True)
        if self.data is not None:
            return load_records(data or self.data, limits)
        rows = self.records or []
        sizes = [row_bytes(row) for row in rows]
        for number, size in enumerate(sizes, start=1):
            limits.check_row(number, size)
        limits.check_total(sum(sizes), "inline records")
        records, problems = [], []
        for number, row in enumerate(rows, start=1):
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


#: Called with every progress report of a run, before the rate limit of the stored
#: states (trainer.metrics's gauges).
PROGRESS_HOOKS: list[Callable[[dict[str, Any]], None]] = []


class StateReporter:
    """Stores ``PROGRESS`` states, at most one per ``min_interval_s`` within a phase.

    A phase change and the last step of a phase are always stored, so a client
    polling the result sees each phase. Every report goes to :data:`PROGRESS_HOOKS`.
    """

    def __init__(self, task: Any, min_interval_s: float = 0.5) -> None:
        self.task = task
        self.min_interval_s = min_interval_s
        self.phase: str | None = None
        self.last_s = 0.0

    def __call__(self, meta: dict[str, Any]) -> None:
        for hook in PROGRESS_HOOKS:
            hook(meta)
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


def run_folder(request: TrainRequest, settings: Settings, task_id: str) -> Path:
    """The run folder: ``out`` confined below the runs root, or ``<runs root>/<task id>``."""
    root = settings.train_runs_root
    root.mkdir(parents=True, exist_ok=True)
    return confine(request.out or task_id, root, "out", "TIQU_TRAIN_RUNS_DIR", False)


def finished_run(out: Path, task_id: str) -> dict[str, Any] | None:
    """The result of this task's run when it already finished in ``out`` (a redelivery
    after the run ended but before its acknowledgement), else None."""
    if not (out / MANIFEST_NAME).is_file():
        return None
    manifest = Manifest.load(out)
    if getattr(manifest, "task_id", None) != task_id:
        return None
    return {**manifest.model_dump(mode="json"), "run_dir": str(out)}


def run_request(request: TrainRequest, settings: Settings, task_id: str,
                report: Any = None, out: Path | None = None) -> dict[str, Any]:
    """Train as ``request`` says; the manifest as a dict, plus ``run_dir``.

    Paths are confined and sizes limited (see the module). A run folder with a
    checkpoint is resumed; one this task already finished is returned as it is.
    """
    from trainer.lora import train

    out = out or run_folder(request, settings, task_id)
    data = None if request.data is None else confine(
        request.data, settings.train_data_root, "data", "TIQU_TRAIN_DATA_DIR", True)
    done = finished_run(out, task_id)
    if done is not None:
        log.info("train task %s: run already finished in %s", task_id, out)
        return done
    try:
        records = request.load(size_limits(settings), data)
    except DataTooLarge:
        raise
    except DataError as err:
        raise row_numbers_only(err) from None
    resume = any((out / CHECKPOINTS).glob("checkpoint-*"))
    config = request.config.replace(resume=True) if resume else request.config
    records, retrain = retrain_of(request, settings, records)
    log.info("train task %s: %d rows, output %s%s", task_id, len(records), out,
             " (resuming)" if resume else "")
    manifest = train(settings, records, out, config, on_progress=report,
                     source=None if data is None else str(data), run_id=task_id,
                     retrain=retrain)
    done = {**manifest.model_dump(mode="json"), "run_dir": str(out)}
    if request.promote_if_better:
        from trainer.retrain import publish_and_gate

        done["promotion"] = publish_and_gate(settings, out, promote=True)
    return done


def retrain_of(request: TrainRequest, settings: Settings, records: list[Record]
               ) -> tuple[list[Record], Any]:
    """The rows to replay and the :class:`trainer.retrain.Retrain` a request asks for
    (None without ``from_adapter``): the parent fetched from the registry, the
    corrections from the rows (tag ``correction``) and, with ``corrections``, from the
    stored stream."""
    if request.from_adapter is None:
        return records, None
    from trainer.retrain import Retrain, resolve_parent, split_rows

    records, corrections = split_rows(records)
    if request.corrections:
        from core import corrections as stored
        from core.redis import client_from_url

        client = client_from_url(settings.backend_url, settings)
        corrections += [Record(text=c.text, gold=c.gold, tags=["correction"])
                        for c in stored.load(client)]
    parent, version = resolve_parent(settings, request.from_adapter, local=False)
    share = {} if request.correction_share is None else {"share": request.correction_share}
    return records, Retrain(parent, version, corrections, **share)


class RunLease:
    """A Redis lease on a run folder, held by one execution and refreshed every
    ``ttl_s / 3`` seconds by a thread; it lapses ``ttl_s`` after its holder dies."""

    _REFRESH = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
    _RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('del', KEYS[1]) else return 0 end")

    def __init__(self, client: Any, out: Path, ttl_s: float) -> None:
        self.client, self.ttl_ms = client, int(ttl_s * 1000)
        self.key = LEASE_PREFIX + hashlib.sha256(str(out).encode()).hexdigest()[:32]
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease and start refreshing it; False when another execution holds it."""
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._thread = threading.Thread(target=self._refresh, name="train-lease", daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self.client.eval(self._REFRESH, 1, self.key, self.token, self.ttl_ms)
            except Exception as err:  # Redis away for a moment: the next refresh retries
                log.warning("train lease refresh failed: %s", type(err).__name__)

    def release(self) -> None:
        """Stop refreshing and drop the lease if still ours; a failure here only logs,
        since the lease lapses by itself within ``ttl_s``."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join()
        try:
            self.client.eval(self._RELEASE, 1, self.key, self.token)
        except Exception as err:
            log.warning("train lease release failed: %s", type(err).__name__)


def register(app: Any, settings: Settings) -> Any:
    """Register ``tiqu.train`` on ``app``.

    The message is acknowledged when the run ends (late ack), so a run whose
    worker is killed is delivered again and resumes from its checkpoints. A
    delivery that finds the run folder leased by a live run retries after one
    lease period; the live run's own acknowledgement, or the finished folder,
    then settles it.
    """
    from core.redis import client_from_url

    client = client_from_url(settings.redis_url, settings)

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
              throws=(TiquError,), max_retries=None)
    def train_task(self: Any, payload: Any) -> dict[str, Any]:
        request = parse_request(payload)
        task_id = self.request.id or "local"
        out = run_folder(request, settings, task_id)
        lease = RunLease(client, out, settings.dead_worker_s)
        if not lease.acquire():
            log.info("train task %s: %s is leased by a live run; retrying later", task_id, out)
            raise self.retry(countdown=settings.dead_worker_s)
        try:
            return run_request(request, settings, task_id, StateReporter(self), out)
        finally:
            lease.release()

    return train_task


def register_correct(app: Any, settings: Settings) -> Any:
    """Register ``tiqu.correct``: check ``{id, text, gold}`` (:func:`core.corrections.check`)
    and store it; returns an envelope: ``ok`` with the gold answer, its spans and the
    stream ``entry``, or ``error`` with the problem's code (nothing stored)."""
    from core import corrections
    from core.errors import InvalidInput
    from core.names import CORRECT_TASK
    from core.redis import client_from_url
    from core.schema import Complaint, Envelope
    from core.validation import payload_id

    # Corrections live next to the results and the review list (the result backend).
    client = client_from_url(settings.backend_url, settings)

    @app.task(name=CORRECT_TASK, bind=True)
    def correct_task(self: Any, payload: Any) -> dict[str, Any]:
        try:
            correction = corrections.check(payload, "task", settings.max_text_chars)
        except InvalidInput as err:
            log.info("correction %s refused: %s", self.request.id, err.code)
            return Envelope.failure(payload_id(payload), err.code, str(err)).model_dump(
                mode="json")
        entry = corrections.store(client, correction)
        env = Envelope(id=correction.id, status="ok", result=Complaint(**correction.gold),
                       spans=correction.spans)
        return {**env.model_dump(mode="json"), "entry": entry}

    return correct_task
