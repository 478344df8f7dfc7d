"""``tiqu enqueue FILE``, ``tiqu extract FILE -o OUT`` and ``tiqu collect IDS -o OUT``.

A bulk job never loses a result. ``extract`` records every task id in a state
file beside the output (``OUT.tiqu-state``) before the task is sent, writes
envelopes in input order as they become writable, and on a timeout or Ctrl-C
keeps what arrived; ``--resume`` sends nothing that was sent and collects the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import TiquError
from core.settings import Settings
from producer.client import Client, Submitted
from producer.sources import OutputFormat, read_source

STATE_SUFFIX = ".tiqu-state"
#: Exit status when results are missing after --timeout-s (the job can be resumed).
EXIT_MISSING = 3
EXIT_INTERRUPTED = 130
CHUNK = 1000


def add_parser(sub: Any) -> None:
    p = sub.add_parser("enqueue", help="enqueue complaints; prints or records task ids")
    _add_input(p)
    p.add_argument("--ids", help="write task ids here as JSONL {index, id, task_id} "
                   "(for tiqu collect) instead of printing them")
    p.set_defaults(func=run_enqueue)
    p = sub.add_parser("extract", help="enqueue a file and collect envelopes in input order")
    _add_input(p)
    _add_output(p)
    p.add_argument("--resume", action="store_true",
                   help=f"continue the job recorded in OUT{STATE_SUFFIX}: send nothing twice")
    p.set_defaults(func=run_extract)
    p = sub.add_parser("collect", help="collect the results of an earlier enqueue --ids")
    p.add_argument("ids_file", help="the file written by tiqu enqueue --ids")
    _add_output(p)
    p.add_argument("--resume", action="store_true",
                   help="keep the finished lines of OUT and collect only the rest")
    p.set_defaults(func=run_collect)


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="JSONL or JSON array (id, text), CSV or XLSX (text column), "
                   "text lines, or - for stdin")
    p.add_argument("--encoding", help="input text encoding (default: UTF-8, else GB18030)")


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, help="output file, one envelope per line/row")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="csv: flattened fields, UTF-8 with BOM for Excel")
    p.add_argument("--timeout-s", type=float, default=None,
                   help="stop waiting after this long: missing results become timeout lines")


def _progress(total: int | None, desc: str, initial: int = 0) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, dynamic_ncols=True,
                initial=initial)


# --- the state file ---------------------------------------------------------------------


@dataclass
class Task:
    """One item of a job: its input index, the caller's id, its task id, when it was sent."""

    index: int
    id: str | None
    task_id: str
    sent_at: float | None = None


class JobState:
    """An append-only JSONL file: a header, then per chunk its tasks, then a sent mark.

    Task lines ``{index, id, task_id}`` are written and fsynced BEFORE their chunk
    is pushed; ``{"sent": n, "sent_at": t}`` follows once the push returned, so
    tasks below index ``n`` were surely sent at ``t``. Tasks after the last mark
    may or may not have been sent: a resumed run sends them again under the same
    task ids, which yields one result each (results are stored SET NX).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, header: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(header, ensure_ascii=False) + "\n", encoding="utf-8")

    def _append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())

    def record(self, tasks: list[Task]) -> None:
        self._append([{"index": t.index, "id": t.id, "task_id": t.task_id} for t in tasks])

    def mark_sent(self, upto: int, sent_at: float) -> None:
        self._append([{"sent": upto, "sent_at": sent_at}])

    def load(self) -> tuple[dict[str, Any], list[Task]]:
        """The header and the tasks by index. Tasks no mark covers get ``sent_at=None``,
        except in a file with no marks at all (ids written by another tool), whose
        tasks count as sent when the file was last written."""
        header: dict[str, Any] = {}
        tasks: dict[int, Task] = {}
        marks = 0
        for line in self.path.read_text(encoding="utf-8").split("\n"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: its chunk was never marked sent
            if not isinstance(row, dict):
                continue
            if "task_id" in row:
                t = Task(int(row["index"]), row.get("id"), str(row["task_id"]),
                         row.get("sent_at"))
                tasks[t.index] = t
            elif "sent" in row:
                marks += 1
                for t in tasks.values():
                    if t.index < int(row["sent"]) and t.sent_at is None:
                        t.sent_at = float(row["sent_at"])
            elif not header:
                header = row
        if not marks:
            mtime = self.path.stat().st_mtime
            for t in tasks.values():
                t.sent_at = t.sent_at or mtime
        return header, [tasks[i] for i in sorted(tasks)]


def items_hash(items: list[tuple[str, Any]]) -> str:
    """A digest of the parsed items, so a resumed job can tell that its input changed."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
    return h.hexdigest()


def send_recorded(client: Client, state: JobState, items: list[tuple[str, Any]],
                  tasks: list[Task]) -> None:
    """Send ``tasks`` (texts from ``items`` by index) in chunks, recording each chunk first.

    Tasks already in the state file are not recorded again, only sent.
    """
    known = {t.task_id for t in state.load()[1]} if state.path.exists() else set()
    with _progress(len(tasks), "enqueue") as bar:
        for start in range(0, len(tasks), CHUNK):
            chunk = tasks[start:start + CHUNK]
            state.record([t for t in chunk if t.task_id not in known])
            client.send_tasks((t.task_id, t.id, items[t.index][1]) for t in chunk)
            now = time.time()
            for t in chunk:
                t.sent_at = now
            state.mark_sent(chunk[-1].index + 1, now)
            bar.update(len(chunk))


# --- collecting -------------------------------------------------------------------------


def _missing(task: Task, code: str, message: str) -> dict[str, Any]:
    return {"id": task.id, "status": "error", "result": None,
            "error": {"code": code, "message": message}, "grounded": None, "spans": {},
            "confidence": {}, "calibrated": False, "review": [], "model": None,
            "adapter_version": None, "worker": None, "latency_ms": None}


def await_results(client: Client, tasks: list[Task], timeout_s: float | None, ttl_s: float,
                  interval_s: float = 0.2) -> Iterator[tuple[Task, dict[str, Any]]]:
    """Yield ``(task, envelope)`` for every task, as results arrive.

    A task with no result that was sent more than ``ttl_s`` ago yields an
    ``expired`` envelope: its result, if there ever was one, is gone. When
    ``timeout_s`` passes, every task still waiting yields a ``timeout`` envelope.
    """
    waiting = {t.index: t for t in tasks}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while waiting:
        batch = list(waiting.values())
        for start in range(0, len(batch), 5000):
            part = batch[start:start + 5000]
            now = time.time()
            for t, env in zip(part, client.poll([t.task_id for t in part]), strict=True):
                if env is None and t.sent_at is not None and now - t.sent_at > ttl_s:
                    env = _missing(t, "expired", f"no result {ttl_s:g} s after sending "
                                   "(TIQU_RESULT_TTL_S)")
                if env is not None:
                    del waiting[t.index]
                    yield t, env
        if waiting and deadline is not None and time.monotonic() > deadline:
            for t in sorted(waiting.values(), key=lambda t: t.index):
                yield t, _missing(t, "timeout", f"no result within {timeout_s:g} s")
            return
        if waiting:
            time.sleep(interval_s)


class OrderedWriter:
    """Appends records to ``out`` strictly in index order, each as soon as all before it are.

    ``kept`` holds records (by index) that an earlier run wrote after a gap.
    """

    def __init__(self, fh: Any, fmt: OutputFormat, start: int, kept: dict[int, str]) -> None:
        self.fh, self.fmt, self.next, self.ready = fh, fmt, start, dict(kept)
        self.counts = {"ok": 0, "error": 0, "timeout": 0, "expired": 0}

    def put(self, index: int, env: dict[str, Any]) -> None:
        code = (env.get("error") or {}).get("code")
        key = code if code in ("timeout", "expired") else "ok" if env.get("status") == "ok" \
            else "error"
        self.counts[key] += 1
        self.ready[index] = self.fmt.render(env)
        self.flush_ready()

    def flush_ready(self) -> None:
        while self.next in self.ready:
            self.fh.write(self.ready.pop(self.next))
            self.next += 1
        self.fh.flush()


def _open_output(out: str, fmt: OutputFormat, resume: bool) -> tuple[Any, int, dict[int, str]]:
    """Open ``out`` for appending; on resume keep its leading final records and remember
    the final ones after the first gap (they are written again in order)."""
    records = fmt.read_back(out) if resume else []
    done = next((i for i, (_, final) in enumerate(records) if not final), len(records))
    kept = {i: text for i, (text, final) in enumerate(records) if i > done and final}
    tmp = Path(out + ".tmp")
    with open(tmp, "w", encoding=fmt.encoding, newline="") as fh:
        fh.write(fmt.header + "".join(text for text, _ in records[:done]))
    os.replace(tmp, out)
    fh = open(out, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed by caller
    return fh, done, kept


@dataclass
class Outcome:
    total: int
    counts: dict[str, int]
    interrupted: bool = False


def collect_to(client: Client, tasks: list[Task], out: str, fmt: OutputFormat, resume: bool,
               timeout_s: float | None, ttl_s: float) -> Outcome:
    """Collect ``tasks`` (indexed 0..n-1) into ``out`` in order; see :func:`await_results`.

    Ctrl-C stops collecting and keeps what is written.
    """
    fh, done, kept = _open_output(out, fmt, resume)
    writer = OrderedWriter(fh, fmt, done, kept)
    pending = [t for t in tasks if t.index >= done and t.index not in kept]
    outcome = Outcome(len(tasks), writer.counts)
    with fh, _progress(len(tasks), "extract", initial=len(tasks) - len(pending)) as bar:
        try:
            for task, env in await_results(client, pending, timeout_s, ttl_s):
                if env.get("id") is None:
                    env["id"] = task.id
                writer.put(task.index, env)
                bar.update(1)
        except KeyboardInterrupt:
            outcome.interrupted = True
    return outcome


def _finish(outcome: Outcome, out: str, resume_hint: str, state: Path | None,
            start: float) -> int:
    c = outcome.counts
    elapsed = time.perf_counter() - start
    if outcome.interrupted:
        print(f"tiqu: interrupted; results so far are in {out}; resume with: {resume_hint}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if c["timeout"]:
        print(f"tiqu: {c['timeout']} of {outcome.total} results missing (timeout lines in "
              f"{out}); resume with: {resume_hint}", file=sys.stderr)
        return EXIT_MISSING
    if state is not None:
        state.unlink(missing_ok=True)
    rate = outcome.total / elapsed if elapsed else 0.0
    print(f"{outcome.total} complaints: {c['ok']} ok, {c['error']} error, {c['expired']} "
          f"expired in {elapsed:.1f} s ({rate:.2f}/s) -> {out}", file=sys.stderr)
    return 0


def _hint(command: str, args: argparse.Namespace) -> str:
    extra = f" --format {args.format}" if args.format != "jsonl" else ""
    extra += f" --encoding {args.encoding}" if getattr(args, "encoding", None) else ""
    return f"tiqu {command} -o {args.out}{extra} --resume"


# --- commands ---------------------------------------------------------------------------


def run_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.from_settings(settings)
    items = list(read_source(args.file, args.encoding))
    tasks = [Task(i, id_, str(uuid.uuid4())) for i, (id_, _) in enumerate(items)]
    if args.ids:
        state = JobState(Path(args.ids))
        state.create({"input": _input_name(args.file), "items_sha256": items_hash(items)})
        send_recorded(client, state, items, tasks)
        print(f"{len(tasks)} tasks sent; collect with: tiqu collect {args.ids} -o OUT.jsonl",
              file=sys.stderr)
        return 0
    client.send_tasks((t.task_id, t.id, items[t.index][1]) for t in tasks)
    for t in tasks:
        print(f"{t.id}\t{t.task_id}")
    return 0


def _input_name(path: str) -> str:
    return path if path == "-" else str(Path(path).resolve())


def _prepare_state(args: argparse.Namespace, items: list[tuple[str, Any]]) -> JobState:
    """The job's state file, checked against ``--resume`` and the input."""
    state = JobState(Path(args.out + STATE_SUFFIX))
    digest = items_hash(items)
    if not args.resume:
        if state.path.exists():
            raise TiquError(f"{state.path} exists: an unfinished job writes to {args.out}; "
                            "add --resume to continue it, or delete the file to start over")
        state.create({"input": _input_name(args.file), "items_sha256": digest})
        return state
    if not state.path.exists():
        raise TiquError(f"no job to resume: {state.path} does not exist "
                        "(a finished job deletes it)")
    header, _ = state.load()
    if header.get("items_sha256") != digest:
        raise TiquError(f"input changed since the job started: {args.file} sha256 {digest[:12]}"
                        f" != {str(header.get('items_sha256'))[:12]} in {state.path}")
    return state


def run_extract(args: argparse.Namespace, settings: Settings) -> int:
    """Send the file (what is not yet sent, on resume) and collect into ``--out`` in order."""
    start = time.perf_counter()
    fmt = OutputFormat(args.format)
    client = Client.from_settings(settings)
    items = list(read_source(args.file, args.encoding))
    state = _prepare_state(args, items)
    recorded = {t.index: t for t in state.load()[1]}
    tasks = [recorded.get(i) or Task(i, id_, str(uuid.uuid4()))
             for i, (id_, _) in enumerate(items)]
    unsent = [t for t in tasks if t.sent_at is None]
    try:
        send_recorded(client, state, items, unsent)
    except KeyboardInterrupt:
        print(f"tiqu: interrupted while sending; resume with: "
              f"{_hint(f'extract {args.file}', args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    outcome = collect_to(client, tasks, args.out, fmt, args.resume, args.timeout_s,
                         settings.result_ttl_s)
    return _finish(outcome, args.out, _hint(f"extract {args.file}", args), state.path, start)


def run_collect(args: argparse.Namespace, settings: Settings) -> int:
    """Collect the tasks listed in an ids file into ``--out`` in order."""
    start = time.perf_counter()
    _, tasks = JobState(Path(args.ids_file)).load()
    for t in tasks:  # an unmarked chunk cannot be sent from here: wait for it as if sent
        t.sent_at = t.sent_at or Path(args.ids_file).stat().st_mtime
    tasks = [Task(n, t.id, t.task_id, t.sent_at) for n, t in enumerate(tasks)]
    outcome = collect_to(Client.from_settings(settings), tasks, args.out,
                         OutputFormat(args.format), args.resume, args.timeout_s,
                         settings.result_ttl_s)
    return _finish(outcome, args.out, _hint(f"collect {args.ids_file}", args), None, start)


# --- kept for tiqu demo -----------------------------------------------------------------


def send_all(client: Client, path: str) -> list[Submitted]:
    """Read ``path`` and send everything, pipelined in chunks, with a progress bar."""
    items = list(read_source(path))
    sent: list[Submitted] = []
    with _progress(len(items), "enqueue") as bar:
        for start in range(0, len(items), CHUNK):
            sent.extend(client.submit_many(items[start:start + CHUNK]))
            bar.update(min(CHUNK, len(items) - start))
    return sent


def write_in_order(
    client: Client, sent: list[Submitted], out: str, timeout_s: float | None
) -> dict[str, int]:
    """Write envelopes to ``out`` in input order as they arrive; missing ones after
    ``timeout_s`` become ``timeout`` envelopes."""
    tasks = [Task(i, s.id, s.task_id) for i, s in enumerate(sent)]
    outcome = collect_to(client, tasks, out, OutputFormat("jsonl"), False, timeout_s,
                         float("inf"))
    return outcome.counts
