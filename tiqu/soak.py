"""``tiqu soak``: send complaints while killing workers with SIGKILL; count what was lost.

Starts ``--workers`` Celery workers (subprocesses, solo pool) on ``--redis-url``,
a database of the soak's own: it refuses a database that holds keys unless
``--flush`` is given. It sends ``--tasks`` complaints at ``--rate`` per second
and, while sending, kills a random worker with SIGKILL every ``--kill-every``
seconds and starts a replacement. Then it stops killing and waits up to
``--drain-timeout-s`` for the remaining answers.

Reported: tasks sent, answered, ``lost`` (sent - answered at the end),
``mismatched`` (an answer for the wrong complaint), and ``duplicates``: tasks
executed more than once. Executions are counted from the workers' own logs,
which is free: the runtime logs one line per task (``task <task id> id=...
status=...``) once its answer is made and before it is stored, so a task
whose worker died after running it but before storing shows two lines (an
answer that closes early in a continuous batch is logged and stored then), and
so does a task a cut-off (fenced) worker ran and dropped before another ran it. A
redelivered task whose result already exists is acknowledged without running
(``already answered``); those are reported as ``skipped_redeliveries``.

``--restart-redis-at S`` runs the soak on a redis-server of its own (AOF,
``appendfsync everysec``, a free loopback port), kills it with SIGKILL ``S``
seconds into the run and starts it again on the same files after
``--redis-down-s``. The producer retries what it could not send; workers
reconnect on their own. With ``everysec`` Redis may lose the last second of
writes, so tasks sent within ``FSYNC_WINDOW_S`` before the kill are counted
apart (``lost_in_fsync_window``) from the rest (``lost``).

``--hosts N`` runs on a namespace cluster (tiqu.cluster: Redis and N hosts,
each in a network namespace of its own, needs root) with ``--workers``
workers per host, and schedules host faults: ``--kill-host-at S`` SIGKILLs
every process of the first host (a fresh worker starts there at once, under
a new name), ``--partition-at S --partition-s D`` cuts the last host off for
``D`` seconds, ``--restart-redis-at S`` restarts the cluster's Redis. For each
fault the report gives the longest time a task that was waiting when it
struck waited for its answer, and for a killed or cut-off host the tasks that
host held then and how long after the fault the last of them was answered
(the recovery, apart from the backlog); it also gives the throughput (answers per second
from the first send to the last answer) and Redis's CPU seconds (``INFO
cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.redis import mask_url
from core.settings import Settings
from workers.launch import celery_argv, wait_ready

_EXECUTED = re.compile(r"\] task (\S+) id=\S* status=")
_SKIPPED = "already answered; acknowledging the duplicate"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("soak", help="run tasks while killing workers; count lost answers")
    p.add_argument("--tasks", type=int, default=5000, help="complaints to send")
    p.add_argument("--kill-every", type=float, default=None, metavar="S",
                   help="SIGKILL a random worker every S seconds while sending (default 10; "
                        "0: never, the default with --hosts)")
    p.add_argument("--workers", type=int, default=2, help="workers kept running")
    p.add_argument("--engine", choices=["echo", "model"], default="echo")
    p.add_argument("--rate", type=float, default=50.0, help="complaints sent per second")
    p.add_argument("--visibility-timeout-s", type=int, default=10,
                   help="workers' TIQU_VISIBILITY_TIMEOUT_S (redelivery delay)")
    p.add_argument("--batch-size", type=int, default=16, help="workers' TIQU_BATCH_SIZE")
    p.add_argument("--drain-timeout-s", type=float, default=None,
                   help="wait this long for answers after the last send "
                        "(default: 3 x visibility timeout + 60)")
    p.add_argument("--log-dir", type=Path, help="worker logs (default: a temporary folder)")
    p.add_argument("--flush", action="store_true", help="FLUSHDB the soak's database first")
    p.add_argument("--seed", type=int, default=0, help="which worker gets killed")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--restart-redis-at", type=float, default=None, metavar="S",
                   help="run on a redis-server of the soak's own (AOF everysec) and "
                        "SIGKILL it S seconds in, then start it again")
    p.add_argument("--redis-down-s", type=float, default=2.0,
                   help="how long Redis stays down with --restart-redis-at")
    p.add_argument("--hosts", type=int, default=0, metavar="N",
                   help="run on a namespace cluster of N hosts (root; --workers per host)")
    p.add_argument("--kill-host-at", type=float, default=None, metavar="S",
                   help="with --hosts: SIGKILL every process of the first host S seconds in")
    p.add_argument("--partition-at", type=float, default=None, metavar="S",
                   help="with --hosts: cut the last host off S seconds in")
    p.add_argument("--partition-s", type=float, default=30.0, metavar="D",
                   help="with --partition-at: how long the host stays cut off")
    p.add_argument("--dead-worker-s", type=int, default=None,
                   help="workers' TIQU_DEAD_WORKER_S (default: the settings' value)")
    p.set_defaults(func=run)


@dataclass
class Report:
    """What a soak run measured."""

    tasks: int
    workers: int
    engine: str
    rate_per_s: float
    kill_every_s: float
    visibility_timeout_s: int
    sent: int = 0
    answered: int = 0
    ok: int = 0
    errors: int = 0
    lost: int = 0
    mismatched: int = 0
    duplicates: int = 0
    executions: int = 0
    skipped_redeliveries: int = 0
    kills: int = 0
    workers_started: int = 0
    send_s: float = 0.0
    drain_s: float = 0.0
    answer_delay_p50_s: float = 0.0
    answer_delay_p99_s: float = 0.0
    answer_delay_max_s: float = 0.0
    redis_restarts: int = 0
    lost_in_fsync_window: int = 0
    send_retries: int = 0
    lost_ids: list[str] = field(default_factory=list)
    hosts: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    throughput_per_s: float = 0.0
    redis_cpu_s: float = 0.0


#: With ``appendfsync everysec`` a SIGKILLed Redis may lose this much of its
#: last writes (one second, plus a margin for the fsync thread's lag).
FSYNC_WINDOW_S = 2.0


class OwnRedis:
    """A redis-server of the soak's own: AOF every second, loopback, a free port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("--restart-redis-at needs redis-server on PATH")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                     str(workdir), "--save", "", "--appendonly", "yes",
                     "--appendfsync", "everysec"]
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30) -> None:
        import redis

        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        probe = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                probe.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise ConfigError(f"redis-server on port {self.port} did not start; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Fleet:
    """The soak's worker processes: start, kill at random, replace, stop."""

    def __init__(self, settings: Settings, args: argparse.Namespace, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = {**os.environ, "TIQU_REDIS_URL": settings.redis_url,
                    "TIQU_ENGINE": args.engine, "TIQU_BATCH_SIZE": str(args.batch_size),
                    "TIQU_VISIBILITY_TIMEOUT_S": str(args.visibility_timeout_s),
                    "PYTHONUNBUFFERED": "1"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.host = socket.gethostname()

    def start_one(self) -> str:
        self.started += 1
        name = f"soak{self.started}@{self.host}"
        log = open(self.log_dir / f"soak{self.started}.log", "wb")
        self.procs[name] = subprocess.Popen(celery_argv(name), env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        return name

    def wait_ready(self, timeout_s: float) -> None:
        """Until every started worker answers a ping (workers.launch.wait_ready)."""
        from core.queue import make_celery

        alive = {n: p for n, p in self.procs.items() if p.poll() is None}
        wait_ready(make_celery(self.settings), alive, timeout_s,
                   lambda: f"logs in {self.log_dir}")

    def kill_random(self, rng: random.Random) -> str:
        alive = sorted(n for n, p in self.procs.items() if p.poll() is None)
        victim = rng.choice(alive)
        self.procs[victim].send_signal(signal.SIGKILL)
        self.procs[victim].wait()
        return victim

    def stop_all(self, timeout_s: float = 30) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _complaint(i: int) -> str:
    return f"客户{i}号投诉：宽带第{i % 97 + 1}次断网，地址测试路{i}号，邮箱 c{i}@example.com"


class Tracker:
    """Sent tasks still waiting for an answer, and what the answers said."""

    def __init__(self, client: Any, report: Report) -> None:
        self.client = client
        self.report = report
        self.waiting: dict[str, tuple[int, float]] = {}  # task id -> (index, sent at)
        self.delays: list[float] = []
        self.answered: dict[str, tuple[float, float]] = {}  # task id -> (sent at, answered at)
        self.start = time.monotonic()

    def send(self, start: int, count: int) -> None:
        """Send complaints ``start`` .. ``start + count``; while Redis is away, none
        is counted and the caller sends the same indices again later."""
        import redis

        try:
            sent = self.client.submit_many([(f"s{i}", _complaint(i))
                                            for i in range(start, start + count)])
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            self.report.send_retries += 1
            return
        now = time.monotonic()
        for i, s in enumerate(sent, start):
            self.waiting[s.task_id] = (i, now)
        self.report.sent += count

    def poll(self) -> None:
        import redis

        try:
            self._poll()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass  # Redis restarting: the next poll sees the answers

    def _poll(self) -> None:
        ids = list(self.waiting)
        for chunk in range(0, len(ids), 5000):
            part = ids[chunk:chunk + 5000]
            now = time.monotonic()
            for task_id, env in zip(part, self.client.poll(part), strict=True):
                if env is not None:
                    self._answered(task_id, env, now)

    def _answered(self, task_id: str, env: dict[str, Any], now: float) -> None:
        index, sent_at = self.waiting.pop(task_id)
        self.delays.append(now - sent_at)
        self.answered[task_id] = (sent_at, now)
        self.report.answered += 1
        if env.get("status") == "ok":
            self.report.ok += 1
        else:
            self.report.errors += 1
        result = env.get("result") or {}
        if env.get("id") != f"s{index}" or (
                self.report.engine == "echo" and result.get("question") != _complaint(index)):
            self.report.mismatched += 1


def _fire(schedule: list[Any], start: float) -> None:
    for fault in schedule:
        if fault.fired_s is None and time.monotonic() - start >= fault.at_s:
            fault.fired_s = round(time.monotonic() - start, 1)
            fault.action()
            print(f"{fault.fired_s:7.1f} s  {fault.label}", file=sys.stderr)


def _drive(args: argparse.Namespace, fleet: Any, tracker: Tracker,
           own: OwnRedis | None = None, schedule: list[Any] | None = None) -> float | None:
    """Send at the target rate, kill on schedule, poll; then drain.

    Returns when Redis was killed (seconds into the run), if it was.
    """
    report, rng = tracker.report, random.Random(args.seed)
    start = tracker.start = time.monotonic()
    schedule = schedule or []
    next_kill = start + args.kill_every if args.kill_every > 0 else float("inf")
    next_poll = start
    redis_killed_at = None
    while report.sent < args.tasks:
        now = time.monotonic()
        if own is not None and redis_killed_at is None and now - start >= args.restart_redis_at:
            redis_killed_at = now - start
            own.kill()
            print(f"{redis_killed_at:7.1f} s  killed redis-server (SIGKILL)", file=sys.stderr)
            time.sleep(args.redis_down_s)
            own.start()
            report.redis_restarts += 1
            print(f"{time.monotonic() - start:7.1f} s  redis-server started again",
                  file=sys.stderr)
            continue
        _fire(schedule, start)
        due = min(args.tasks, int((now - start) * args.rate) + 1) - report.sent
        if due > 0:
            tracker.send(report.sent, due)
        if now >= next_kill:
            victim = fleet.kill_random(rng)
            replacement = fleet.start_one()
            report.kills += 1
            print(f"{now - start:7.1f} s  killed {victim}, started {replacement}",
                  file=sys.stderr)
            next_kill += args.kill_every
        if now >= next_poll:
            tracker.poll()
            next_poll = now + 0.5
        time.sleep(0.02)
    report.send_s = round(time.monotonic() - start, 1)
    drain_timeout_s = args.drain_timeout_s or 3 * args.visibility_timeout_s + 60
    drain_start = time.monotonic()
    while ((tracker.waiting or any(f.fired_s is None for f in schedule))
           and time.monotonic() - drain_start < drain_timeout_s):
        _fire(schedule, start)
        time.sleep(0.5)
        tracker.poll()
    report.drain_s = round(time.monotonic() - drain_start, 1)
    return redis_killed_at


def _count_executions(log_dir: Path, report: Report) -> None:
    runs: Counter[str] = Counter()
    for path in sorted(log_dir.glob("soak*.log")):
        text = path.read_text(errors="replace")
        runs.update(_EXECUTED.findall(text))
        report.skipped_redeliveries += text.count(_SKIPPED)
    report.executions = sum(runs.values())
    report.duplicates = sum(1 for n in runs.values() if n > 1)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.kill_every is None:  # random worker kills: off on a cluster (host faults instead)
        args.kill_every = 0.0 if args.hosts else 10.0
    if args.hosts:
        return _run_hosts(args, settings)
    from producer import Client

    own = None
    if args.restart_redis_at is not None:
        own = OwnRedis(Path(tempfile.mkdtemp(prefix="tiqu-soak-redis-")))
        own.start()
        settings = settings.model_copy(update={"redis_url": own.url, "result_url": None})
    client = Client.from_settings(settings)
    if args.flush:
        client.broker.flushdb()
    elif client.broker.dbsize():
        raise ConfigError(f"the soak database {mask_url(settings.redis_url)} holds "
                          f"{client.broker.dbsize()} keys; use a database of its own or --flush")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="tiqu-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    report = Report(args.tasks, args.workers, args.engine, args.rate, args.kill_every,
                    args.visibility_timeout_s)
    fleet = Fleet(settings, args, log_dir)
    tracker = Tracker(client, report)
    killed_at = None
    try:
        for _ in range(args.workers):
            fleet.start_one()
        fleet.wait_ready(timeout_s=300)
        killed_at = _drive(args, fleet, tracker, own)
        tracker.poll()
    finally:
        fleet.stop_all()
        if own is not None:
            own.stop()
    return _conclude(args, report, tracker, fleet, log_dir, killed_at)


def _run_hosts(args: argparse.Namespace, settings: Settings) -> int:
    """The soak on a namespace cluster (tiqu.cluster), with host faults."""
    from producer import Client
    from tiqu.cluster import Cluster, HostFleet, fault_schedule, fault_waits

    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="tiqu-soak-"))
    env = {"TIQU_ENGINE": args.engine, "TIQU_BATCH_SIZE": str(args.batch_size),
           "TIQU_VISIBILITY_TIMEOUT_S": str(args.visibility_timeout_s)}
    if args.dead_worker_s is not None:
        env["TIQU_DEAD_WORKER_S"] = str(args.dead_worker_s)
    report = Report(args.tasks, args.workers, args.engine, args.rate, args.kill_every,
                    args.visibility_timeout_s, hosts=args.hosts)
    with Cluster(args.hosts, log_dir / "cluster") as cluster:
        local = settings.model_copy(update={"redis_url": cluster.local_url, "result_url": None})
        tracker = Tracker(Client.from_settings(local), report)
        fleet = HostFleet(cluster, args.workers, env)
        schedule = fault_schedule(args, cluster, fleet, report)
        try:
            fleet.start_all()
            fleet.wait_ready(timeout_s=300)
            _drive(args, fleet, tracker, schedule=schedule)
            tracker.poll()
            cpu = cluster.client().info("cpu")
            report.redis_cpu_s = round(cpu["used_cpu_sys"] + cpu["used_cpu_user"], 1)
        finally:
            fleet.stop_all()
    report.faults = fault_waits(schedule, tracker)
    return _conclude(args, report, tracker, fleet, cluster.workdir, None)


def _conclude(args: argparse.Namespace, report: Report, tracker: Tracker, fleet: Any,
              log_dir: Path, killed_at: float | None) -> int:
    _finish(report, tracker, fleet, log_dir, killed_at)
    _print(report, log_dir)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.lost == 0 and report.mismatched == 0 else 1


def _finish(report: Report, tracker: Tracker, fleet: Any, log_dir: Path,
            redis_killed_at: float | None = None) -> None:
    if redis_killed_at is not None:  # sent in the last second before the kill: may be gone
        report.lost_in_fsync_window = sum(
            1 for _, sent_at in tracker.waiting.values()
            if 0 <= redis_killed_at - (sent_at - tracker.start) <= FSYNC_WINDOW_S)
    report.lost = report.sent - report.answered - report.lost_in_fsync_window
    report.lost_ids = [f"{task_id} (s{index}, sent at {sent_at - tracker.start:.1f} s)"
                       for task_id, (index, sent_at) in sorted(tracker.waiting.items())[:20]]
    report.workers_started = fleet.started
    report.answer_delay_p50_s = _percentile(tracker.delays, 0.5)
    report.answer_delay_p99_s = _percentile(tracker.delays, 0.99)
    report.answer_delay_max_s = _percentile(tracker.delays, 1.0)
    if tracker.answered:
        first_sent = min(sent for sent, _ in tracker.answered.values())
        span_s = max(at for _, at in tracker.answered.values()) - first_sent
        report.throughput_per_s = round(report.answered / max(span_s, 1e-3), 1)
    _count_executions(log_dir, report)


def _print(report: Report, log_dir: Path) -> None:
    rows = [("sent", report.sent), ("answered", report.answered), ("lost", report.lost),
            ("mismatched", report.mismatched), ("duplicates (ran twice)", report.duplicates),
            ("executions", report.executions),
            ("skipped redeliveries", report.skipped_redeliveries),
            ("kills", report.kills), ("workers started", report.workers_started),
            ("redis restarts", report.redis_restarts),
            ("lost in the fsync window", report.lost_in_fsync_window),
            ("send time (s)", report.send_s), ("drain time (s)", report.drain_s),
            ("answer delay p50/p99/max (s)", f"{report.answer_delay_p50_s} / "
             f"{report.answer_delay_p99_s} / {report.answer_delay_max_s}")]
    for label, value in rows:
        print(f"{label:<30} {value}")
    if report.hosts:
        print(f"{'hosts':<30} {report.hosts}")
        print(f"{'throughput (tasks/s)':<30} {report.throughput_per_s}")
        print(f"{'redis cpu (s)':<30} {report.redis_cpu_s}")
    for fault in report.faults:
        print(f"{fault['label'][:29]:<30} at {fault['at_s']} s: longest wait "
              f"{fault['longest_wait_s']} s ({fault['waiting']} task(s) waiting)")
        if "held" in fault:
            after = fault["held_answered_after_s"]
            print(f"{'':<30} " + (
                "it held no task then" if not fault["held"] else
                f"the {fault['held']} task(s) it held: "
                + ("not all answered" if after is None else f"all answered {after} s after")))
    print(f"{'worker logs':<30} {log_dir}")
