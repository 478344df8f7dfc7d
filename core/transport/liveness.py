"""A dead worker's tasks come back within ``TIQU_DEAD_WORKER_S``, not the visibility timeout.

kombu's Redis transport keeps every unacknowledged message in one hash
(``unacked``) with no owner, and gives it back only when the visibility
timeout (an hour by default) has passed. tiqu adds an owner:

- When a worker records fetched messages as unacknowledged
  (:meth:`core.transport.kombu_redis.Channel.record`), the same transaction adds their delivery
  tags to the worker's *held* set, ``tiqu:held:<node>``.
- A :class:`Heartbeat` thread refreshes the worker's liveness key
  ``tiqu:alive:<node>`` every few seconds, also while a batch runs (the
  event loop is busy then), and drops from the held set the tags that are no
  longer unacknowledged (acknowledged, or put back).
- Every worker sweeps on a timer (:func:`core.transport.fetch.tend`): a registered
  node whose liveness key has expired is dead, and everything it held goes
  back on its queue: its in-flight list and, through :func:`release`, every
  tag of its held set that is still unacknowledged (kombu's own
  ``restore_by_tag``: one WATCH/MULTI transaction per message, so a sweeper
  that dies halfway loses nothing; the rest is found by the next sweep).

A worker that was only slow and is taken for dead may still finish its batch:
results are written once per id (``SET NX``), and a redelivered message whose
answer exists is acknowledged without running, so nothing is answered twice.
The visibility timeout stays as the last resort.

Self-fencing (:class:`Fence`): a worker cut off from Redis (a network
partition) cannot refresh its key, so after ``alive_ttl_s`` it looks dead and
what it held is put back for others. It must not answer those tasks late. The
heartbeat thread keeps the time of its last confirmed refresh; once that is
older than ``alive_ttl_s`` the worker is *fenced*: a batch finishing then
stores nothing and acknowledges nothing (its results are dropped, counted in
``tiqu_fenced_results_total`` and logged once per cut-off). While cut off the
worker cannot fetch either. On the first refresh that succeeds again the
heartbeat *rejoins*: it puts back every message the worker still held (its
held set and the messages in memory, :func:`release`; a no-op for those that
others put back already), and each of those delivery tags is revoked, so a
batch that was half done when the partition started, and finishes after it
healed, drops those results as well. The batch check reads only this
in-memory state: no Redis round trip per batch. Results stay written once per
id (``SET NX``) in any case; fencing keeps a cut-off worker from doing and
storing work that is already someone else's.

Timing (:class:`Timing`), for ``dead_worker_s`` = 60: the sweep runs every 5 s
and the liveness key lives 50 s, refreshed every 10 s, so a worker killed
right after a refresh is found dead at most 55 s later, and its messages are
back on the queue before 60 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.names import KEY_PREFIX
from core.transport import faults

log = logging.getLogger("tiqu.liveness")

HELD_PREFIX = KEY_PREFIX + "held:"


def held_key(node: str) -> str:
    """The set of delivery tags ``node`` recorded as unacknowledged."""
    return HELD_PREFIX + node


@dataclass(frozen=True)
class Timing:
    """How often liveness is refreshed and swept, derived from ``dead_worker_s``."""

    dead_worker_s: int
    visibility_timeout_s: int

    @property
    def sweep_s(self) -> int:
        return max(1, min(5, self.dead_worker_s // 12))

    @property
    def alive_ttl_s(self) -> int:
        """The liveness key's TTL: expiry plus one sweep stays within ``dead_worker_s``."""
        return max(2, self.dead_worker_s - 2 * self.sweep_s)

    @property
    def beat_s(self) -> float:
        return max(0.5, self.alive_ttl_s / 5)

    @property
    def held_ttl_s(self) -> int:
        """The held set outlives its owner until kombu's own restore would have run."""
        return self.visibility_timeout_s + self.dead_worker_s


def hold(pipe: Any, node: str, tags: list[str], ttl_s: int) -> None:
    """Add ``tags`` to ``node``'s held set inside the caller's transaction."""
    if tags:
        pipe.sadd(held_key(node), *tags)
        pipe.expire(held_key(node), ttl_s)


def release(client: Any, node: str, restore: Callable[[str], None]) -> int:
    """Put back every still-unacknowledged message of dead ``node``; returns how many.

    ``restore(tag)`` moves one message from ``unacked`` to its queue
    atomically and does nothing for a tag that is no longer there. A tag is
    removed from the held set only after its restore, so a sweeper killed
    halfway leaves the rest for the next sweep.
    """
    key = held_key(node)
    tags = sorted(_text(t) for t in client.smembers(key))
    for n, tag in enumerate(tags):
        restore(tag)
        client.srem(key, tag)
        if n == 0:
            faults.point("in_restore")
    client.delete(key)
    return len(tags)


def prune(client: Any, node: str, unacked_key: str) -> int:
    """Drop tags that are no longer unacknowledged from ``node``'s held set."""
    key = held_key(node)
    tags = list(client.smembers(key))
    if not tags:
        return 0
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.hexists(unacked_key, tag)
    gone = [t for t, there in zip(tags, pipe.execute(), strict=True) if not there]
    if gone:
        client.srem(key, *gone)
    return len(gone)


class Fence:
    """Whether this worker may still answer what it holds, from the heartbeat's state.

    ``ttl_s`` is ``None`` until a heartbeat starts (never fenced then).
    :meth:`stale` is what a batch asks before storing; it never talks to Redis.
    """

    #: Revoked tags kept at most; a tag leaves the set when a batch drops it.
    MAX_REVOKED = 100_000

    def __init__(self) -> None:
        self.ttl_s: float | None = None
        self.last_ok = time.monotonic()
        self.revoked: set[str] = set()
        self.dropped = 0
        self.on_drop: list[Callable[[int], Any]] = []
        self._logged = False
        self._lock = threading.Lock()

    def cut_off(self, now: float | None = None) -> bool:
        """True once the last confirmed refresh is older than the liveness key's TTL."""
        now = time.monotonic() if now is None else now
        return self.ttl_s is not None and now - self.last_ok > self.ttl_s

    def confirmed(self, at: float) -> None:
        """A refresh Redis confirmed at ``at``; a later cut-off is logged again."""
        self.last_ok = at
        self._logged = False

    def revoke(self, tags: list[str]) -> None:
        """Results for ``tags`` (put back while this worker held them) are never stored."""
        with self._lock:
            if len(self.revoked) + len(tags) > self.MAX_REVOKED:
                self.revoked.clear()  # stale batches are long gone by then
            self.revoked.update(tags)

    def stale(self, tags: list[str]) -> set[str]:
        """Of ``tags``, those whose results must be dropped: all while cut off, else the
        revoked ones. Counts and logs the drop."""
        with self._lock:
            drop = set(tags) if self.cut_off() else self.revoked.intersection(tags)
            self.revoked.difference_update(drop)
        if drop:
            self.dropped += len(drop)
            for hook in self.on_drop:
                hook(len(drop))
            if not self._logged:
                self._logged = True
                log.error("fenced: cut off from Redis for longer than the liveness TTL "
                          "(%s s); dropped %d result(s) unstored and unacknowledged; others "
                          "answer them", self.ttl_s, len(drop))
            else:
                log.warning("fenced: dropped %d more result(s)", len(drop))
        return drop


#: The worker process's fence (solo pool: one consumer per process).
FENCE = Fence()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Heartbeat(threading.Thread):
    """Refreshes a worker's liveness key and held set from a thread of its own.

    A batch runs inline in the worker's event loop (solo pool), so a timer in
    that loop would stop refreshing for as long as the batch takes, and a
    slow batch would look like a dead worker. ``last_ok`` is the monotonic
    time of the last refresh Redis confirmed; it feeds ``fence``.

    ``restore(tag)`` and ``holding()`` (the delivery tags held in memory) let
    a worker that was cut off put back what it held when it rejoins.
    """

    def __init__(self, client: Any, node: str, alive_key: str, unacked_key: str,
                 timing: Timing, fence: Fence | None = None,
                 restore: Callable[[str], None] | None = None,
                 holding: Callable[[], list[str]] | None = None) -> None:
        super().__init__(name="tiqu-heartbeat", daemon=True)
        self.client = client
        self.node = node
        self.alive_key = alive_key
        self.unacked_key = unacked_key
        self.timing = timing
        self.fence = fence or Fence()
        self.fence.ttl_s = timing.alive_ttl_s
        self.fence.confirmed(time.monotonic())
        self.restore = restore
        self.holding = holding
        self._stop_event = threading.Event()

    @property
    def last_ok(self) -> float:
        return self.fence.last_ok

    def beat(self) -> None:
        """One refresh: the liveness key, the held set's TTL, stale tags pruned.

        After a cut-off, first rejoin (:meth:`rejoin`), then refresh.
        """
        if self.fence.cut_off():
            self.rejoin()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.alive_key, "1", ex=self.timing.alive_ttl_s)
        pipe.expire(held_key(self.node), self.timing.held_ttl_s)
        pipe.execute()
        self.fence.confirmed(time.monotonic())
        prune(self.client, self.node, self.unacked_key)

    def rejoin(self) -> int:
        """Put back and revoke everything held across a cut-off; returns how many tags.

        Revoking first means a batch finishing meanwhile drops them too.
        """
        tags = {_text(t) for t in self.client.smembers(held_key(self.node))}
        tags.update(_held_in_memory(self.holding))
        self.fence.revoke(sorted(tags))
        if self.restore is not None:
            for tag in sorted(tags):
                self.restore(tag)
        self.client.delete(held_key(self.node))
        log.warning("reached Redis again after a cut-off; put back %d held message(s)",
                    len(tags))
        return len(tags)

    def run(self) -> None:
        while not self._stop_event.wait(self.timing.beat_s):
            try:
                self.beat()
            except Exception as err:  # Redis away: the next beat tries again
                log.warning("could not refresh liveness: %s", type(err).__name__)

    def stop(self) -> None:
        self._stop_event.set()


def _held_in_memory(holding: Callable[[], list[str]] | None) -> list[str]:
    for _ in range(3):  # the consumer thread may change the dict while it is copied
        try:
            return list(holding()) if holding is not None else []
        except RuntimeError:
            continue
    return []
