"""Many nodes on one machine: Redis and N worker hosts, each in a network namespace.

A :class:`Cluster` builds, under a unique name prefix (``tiqu-<pid>-<n>-``):

- a *bridge* namespace holding a Linux bridge;
- a *redis* namespace running ``redis-server`` (AOF, ``appendfsync
  everysec``, files in a temporary folder) on ``10.231.77.1:6379``, and on a
  Unix socket in that folder, through which the harness itself (producer,
  checks) talks to it without any route from the root namespace;
- N *host* namespaces (``10.231.77.11`` and up), each running its own
  ``celery -A workers worker`` processes through ``ip netns exec``, with
  ``TIQU_REDIS_URL`` on Redis's namespace address.

Each member namespace is joined to the bridge by a veth pair created with
both ends inside harness namespaces (``ip -n BRIDGE link add ... peer ...
netns MEMBER``); the root namespace's interfaces, routes and firewall are
never touched, and the test subnet exists only inside the namespaces.

Faults: :meth:`partition` takes a host's bridge port down (its processes keep
running, every packet to or from it is dropped), :meth:`heal` brings it back,
:meth:`kill_host` SIGKILLs every process in the host's namespace, and
:meth:`restart_redis` SIGKILLs ``redis-server`` and starts it again on the
same files. :meth:`close` kills every process in the namespaces and deletes
them; it is idempotent and also runs at exit. Root is required (namespaces).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.names import EXTRACT_QUEUE
from core.transport.fetch import INFLIGHT_PREFIX
from core.transport.liveness import held_key
from workers.launch import celery_argv

ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.231.77"
REDIS_ADDR = f"{SUBNET}.1"
REDIS_PORT = 6379
_serial = itertools.count(1)


def check_can_run() -> None:
    """Raise :class:`ConfigError` unless this process may create network namespaces."""
    problems = []
    if os.geteuid() != 0:
        problems.append(f"network namespaces need root (running as uid {os.geteuid()})")
    if shutil.which("ip") is None:
        problems.append("the 'ip' command (iproute2) is not installed")
    if shutil.which("redis-server") is None:
        problems.append("redis-server is not on PATH")
    if problems:
        raise ConfigError("cannot build a namespace cluster: " + "; ".join(problems))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Worker:
    """One worker process inside a host namespace."""

    name: str
    host: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Host:
    """A worker host: its namespace, address and bridge port."""

    index: int
    netns: str
    addr: str
    port: str  # its veth end inside the bridge namespace
    workers: list[Worker] = field(default_factory=list)


class Cluster:
    """Redis plus ``hosts`` worker hosts in namespaces; see the module docstring."""

    def __init__(self, hosts: int, workdir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        check_can_run()
        if not 1 <= hosts <= 50:
            raise ConfigError(f"hosts must be 1 to 50, got {hosts}")
        self.prefix = f"tiqu-{os.getpid()}-{next(_serial)}-"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=self.prefix))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bridge_ns = self.prefix + "br"
        self.redis_ns = self.prefix + "redis"
        self.hosts = [Host(i, f"{self.prefix}h{i}", f"{SUBNET}.{10 + i}", f"p{i}")
                      for i in range(1, hosts + 1)]
        self.env = env or {}
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.socket_path = self.workdir / "redis.sock"
        self._made: list[str] = []
        self._closed = False
        atexit.register(self.close)

    # --- addresses -------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        """The URL workers inside host namespaces use."""
        return f"redis://{REDIS_ADDR}:{REDIS_PORT}/0"

    @property
    def local_url(self) -> str:
        """The URL the harness uses (the Unix socket; no route from the root namespace)."""
        return f"unix://{self.socket_path}?db=0"

    def client(self, **kw: Any) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path), **kw)

    # --- building ----------------------------------------------------------------------
    def start(self) -> Cluster:
        """Create the namespaces, the bridge and the links, and start Redis."""
        try:
            self._add_netns(self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            self._add_member(self.redis_ns, "pr", REDIS_ADDR)
            for host in self.hosts:
                self._add_member(host.netns, host.port, host.addr)
            self.start_redis()
        except BaseException:
            self.close()
            raise
        return self

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _add_member(self, netns: str, port: str, addr: str) -> None:
        self._add_netns(netns)
        # Created inside the bridge namespace; the peer goes straight to the member.
        _ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
        _ip("-n", self.bridge_ns, "link", "set", port, "up")
        _ip("-n", netns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")

    def _exec(self, netns: str, argv: list[str], log_path: Path,
              env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", netns, *argv], env=env, cwd=ROOT,
                                stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)

    # --- Redis ------------------------------------------------------------------------
    def start_redis(self, timeout_s: float = 30) -> None:
        """Start redis-server in its namespace (AOF everysec) and wait for PING."""
        import redis

        argv = [str(shutil.which("redis-server")), "--bind", REDIS_ADDR, "--port",
                str(REDIS_PORT), "--unixsocket", str(self.socket_path), "--unixsocketperm",
                "700", "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--protected-mode", "no"]
        self.redis_proc = self._exec(self.redis_ns, argv, self.workdir / "redis.log",
                                     dict(os.environ))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.client(socket_timeout=2).ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                time.sleep(0.05)
        raise ConfigError(f"redis-server did not start; see {self.workdir / 'redis.log'}")

    def restart_redis(self, down_s: float = 2.0) -> None:
        """SIGKILL redis-server, wait ``down_s``, start it again on the same files."""
        if self.redis_proc is not None and self.redis_proc.poll() is None:
            self.redis_proc.send_signal(signal.SIGKILL)
            self.redis_proc.wait(30)
        time.sleep(down_s)
        self.start_redis()

    # --- workers -------------------------------------------------------------------------
    def worker_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
        env.update({"TIQU_REDIS_URL": self.redis_url, "PYTHONPATH": str(ROOT),
                    "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                    "CUDA_VISIBLE_DEVICES": ""})
        env.update(self.env)
        env.update(extra)
        return env

    def start_worker(self, host: Host, name: str, argv: list[str] | None = None,
                     env: dict[str, str] | None = None) -> Worker:
        """Start ``celery -A workers worker`` (or ``argv``) as ``<name>@<host>`` in ``host``."""
        node = f"{name}@h{host.index}"
        cmd = celery_argv(node)
        if argv:  # another program in place of ``python -m celery -A workers worker``
            cmd = [*argv, *cmd[cmd.index("worker") + 1:]]
        log_path = self.workdir / f"{name}-h{host.index}.log"
        worker = Worker(node, host.netns, self._exec(host.netns, cmd, log_path,
                                                     self.worker_env(**(env or {}))), log_path)
        host.workers.append(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while " ready." not in worker.log():
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.name} not ready in {timeout_s} s")
            time.sleep(0.2)

    # --- faults ------------------------------------------------------------------------
    def partition(self, host: Host) -> None:
        """Drop all of ``host``'s traffic; its processes keep running."""
        _ip("-n", self.bridge_ns, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        _ip("-n", self.bridge_ns, "link", "set", host.port, "up")

    def held_task_ids(self, host: Host) -> set[str]:
        """Task ids that ``host``'s live workers hold now: fetched (their in-flight
        lists) or recorded as unacknowledged (their held sets in ``unacked``)."""
        client, raws = self.client(), []
        for w in host.workers:
            if w.proc.poll() is None:
                raws += client.lrange(f"{INFLIGHT_PREFIX}{EXTRACT_QUEUE}:{w.name}", 0, -1)
                tags = list(client.smembers(held_key(w.name)))
                raws += [row for row in (client.hmget("unacked", tags) if tags else []) if row]
        ids = set()
        for raw in raws:
            body = json.loads(raw)  # unacked rows are [message, exchange, routing key]
            message = body[0] if isinstance(body, list) else body
            task_id = (message.get("headers") or {}).get("id")
            if task_id:
                ids.add(str(task_id))
        return ids

    def kill_host(self, host: Host) -> int:
        """SIGKILL every process in ``host``'s namespace; returns how many."""
        n = _kill_all(host.netns)
        for w in host.workers:
            _reap(w.proc)
        return n

    # --- clean-up --------------------------------------------------------------------------
    def close(self) -> None:
        """Kill every process in the namespaces and delete them (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for netns in reversed(self._made):
            _kill_all(netns)
        for host in self.hosts:
            for w in host.workers:
                _reap(w.proc)
        if self.redis_proc is not None:
            _reap(self.redis_proc)
        for netns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
        atexit.unregister(self.close)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_all(netns: str) -> int:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                         timeout=30).stdout
    pids = [int(p) for p in out.split() if p.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def leftover_namespaces() -> list[str]:
    """Namespaces of this process's clusters still present."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=30).stdout
    mine = f"tiqu-{os.getpid()}-"
    return [line.split()[0] for line in out.splitlines() if line.startswith(mine)]


class HostFleet:
    """``tiqu soak --hosts``: workers spread over a cluster's hosts, the soak's Fleet API."""

    def __init__(self, cluster: Cluster, per_host: int, env: dict[str, str]) -> None:
        self.cluster = cluster
        self.per_host = per_host
        self.env = env
        self.started = 0
        self.workers: list[Worker] = []

    def start_on(self, host: Host) -> str:
        self.started += 1
        worker = self.cluster.start_worker(host, f"soak{self.started}", env=self.env)
        self.workers.append(worker)
        return worker.name

    def start_all(self) -> None:
        for host in self.cluster.hosts:
            for _ in range(self.per_host):
                self.start_on(host)

    def wait_ready(self, timeout_s: float) -> None:
        for worker in self.workers:
            self.cluster.wait_ready(worker, timeout_s)

    def stop_all(self, timeout_s: float = 30) -> None:
        """SIGTERM (a drain) every live worker, then SIGKILL what is left."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _reap(w.proc)


@dataclass
class Fault:
    """A fault the soak fires ``at_s`` seconds into the run."""

    at_s: float
    label: str
    action: Any  # Callable[[], None]
    fired_s: float | None = None
    held: set[str] | None = None  # the tasks the struck host held then (kill, partition)


def fault_schedule(args: Any, cluster: Cluster, fleet: HostFleet,
                   report: Any) -> list[Fault]:
    """The faults asked for on the command line (``tiqu soak``), in firing order."""
    first, last = cluster.hosts[0], cluster.hosts[-1]
    schedule = []
    if args.kill_host_at is not None:
        def kill() -> None:
            killed.held = cluster.held_task_ids(first)
            cluster.kill_host(first)
            report.kills += 1
            for _ in range(fleet.per_host):
                fleet.start_on(first)  # the host comes back with fresh workers
        killed = Fault(args.kill_host_at, f"killed host h{first.index}", kill)
        schedule.append(killed)
    if args.partition_at is not None:
        def partition() -> None:
            held = cluster.held_task_ids(last)
            cluster.partition(last)
            # A fetch that was blocked when the cut came still takes the next
            # message onto the host's in-flight list; its reply never arrives.
            time.sleep(1.0)
            cut.held = held | cluster.held_task_ids(last)
        cut = Fault(args.partition_at, f"partitioned host h{last.index}", partition)
        schedule.append(cut)
        schedule.append(Fault(args.partition_at + args.partition_s,
                              f"healed host h{last.index}", lambda: cluster.heal(last)))
    if args.restart_redis_at is not None:
        def restart() -> None:
            cluster.restart_redis(args.redis_down_s)
            report.redis_restarts += 1
        schedule.append(Fault(args.restart_redis_at, "restarted redis-server", restart))
    return sorted(schedule, key=lambda f: f.at_s)


def fault_waits(schedule: list[Fault], tracker: Any) -> list[dict[str, Any]]:
    """Per fault: how many tasks were waiting when it struck, and the longest wait of those.

    For a host killed or cut off, also the tasks that host held when struck
    (``held``) and the longest time from the fault to one of their answers
    (``held_answered_after_s``; None while any is unanswered): the recovery
    itself, apart from the backlog every waiting task sat in.
    """
    out = []
    for fault in schedule:
        if fault.fired_s is None:
            continue
        at = tracker.start + fault.fired_s
        waits = [answered - sent for sent, answered in tracker.answered.values()
                 if sent <= at < answered]
        unanswered = sum(1 for _, sent in tracker.waiting.values() if sent <= at)
        row = {"label": fault.label, "at_s": fault.fired_s,
               "waiting": len(waits) + unanswered,
               "longest_wait_s": round(max(waits), 1) if waits else 0.0}
        if fault.held is not None:
            done = [tracker.answered[t][1] for t in fault.held if t in tracker.answered]
            row["held"] = len(fault.held)
            row["held_answered_after_s"] = (
                None if len(done) < len(fault.held) else round(max(done, default=at) - at, 1))
        out.append(row)
    return out
