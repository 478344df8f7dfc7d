"""A dead worker's tasks come back within ``TIQU_DEAD_WORKER_S``, not the visibility timeout.

kombu's Redis transport keeps every unacknowledged message in one hash
(``unacked``) with no owner, and gives it back only when the visibility
timeout (an hour by default) has passed. tiqu adds an owner:

- When a worker records fetched messages as unacknowledged
  (:func:`workers.fetch._record`), the same transaction adds their delivery
  tags to the worker's *held* set, ``tiqu:held:<node>``.
- A :class:`Heartbeat` thread refreshes the worker's liveness key
  ``tiqu:alive:<node>`` every few seconds, also while a batch runs (the
  event loop is busy then), and drops from the held set the tags that are no
  longer unacknowledged (acknowledged, or put back).
- Every worker sweeps on a timer (:func:`workers.fetch.tend`): a registered
  node whose liveness key has expired is dead, and everything it held goes
  back on its queue: its in-flight list and, through :func:`release`, every
  tag of its held set that is still unacknowledged (kombu's own
  ``restore_by_tag``: one WATCH/MULTI transaction per message, so a sweeper
  that dies halfway loses nothing; the rest is found by the next sweep).

A worker that was only slow and is taken for dead may still finish its batch:
results are written once per id (``SET NX``), and a redelivered message whose
answer exists is acknowledged without running, so nothing is answered twice.
The visibility timeout stays as the last resort.

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
from workers import faults

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Heartbeat(threading.Thread):
    """Refreshes a worker's liveness key and held set from a thread of its own.

    A batch runs inline in the worker's event loop (solo pool), so a timer in
    that loop would stop refreshing for as long as the batch takes, and a
    slow batch would look like a dead worker. ``last_ok`` is the monotonic
    time of the last refresh Redis confirmed.
    """

    def __init__(self, client: Any, node: str, alive_key: str, unacked_key: str,
                 timing: Timing) -> None:
        super().__init__(name="tiqu-heartbeat", daemon=True)
        self.client = client
        self.node = node
        self.alive_key = alive_key
        self.unacked_key = unacked_key
        self.timing = timing
        self.last_ok = time.monotonic()
        self._stop_event = threading.Event()

    def beat(self) -> None:
        """One refresh: the liveness key, the held set's TTL, stale tags pruned."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.alive_key, "1", ex=self.timing.alive_ttl_s)
        pipe.expire(held_key(self.node), self.timing.held_ttl_s)
        pipe.execute()
        self.last_ok = time.monotonic()
        prune(self.client, self.node, self.unacked_key)

    def run(self) -> None:
        while not self._stop_event.wait(self.timing.beat_s):
            try:
                self.beat()
            except Exception as err:  # Redis away: the next beat tries again
                log.warning("could not refresh liveness: %s", type(err).__name__)

    def stop(self) -> None:
        self._stop_event.set()
