"""Reliable fetch and hostile queue items: what tiqu's kombu transport does, and why.

The kombu side (the channel that sends the fetch, reads the reply and writes
the records) is :mod:`core.transport.kombu_redis`; this module holds the
policy it applies, free of kombu: the in-flight list (:class:`InFlight`), the
sorting of fetched items (:func:`classify`, :func:`refuse`), dead letters and
the sweep (:func:`tend`).

kombu takes a message with BRPOP and records it as unacknowledged only after
reading the reply, so a worker killed in between loses it: the message has
left the queue and exists nowhere else. When a worker consumes one Redis list
(one queue, ``priority_steps`` ``[0]``), it fetches with ``BRPOPLPUSH``
instead, which moves the message atomically onto a list of the worker's own
(``tiqu:inflight:<queue>:<node>``, registered in the set ``tiqu:inflight``);
it leaves that list in the same transaction that records it as unacknowledged.
When the queue holds more, one fetch takes up to ``FETCH_MAX`` messages in two
round trips and records them all in a third
(:meth:`core.transport.kombu_redis.Channel.record`).

:func:`tend` runs every few seconds on each worker: it refreshes the worker's
liveness key (``tiqu:alive:<node>``), puts its own leftovers back on the queue
(anything on its list while no fetch is outstanding, e.g. a reply kombu
discarded) and does the same for every node whose liveness key has expired.
A message is on the list or in ``unacked``, never in both (one transaction
moves it), so a death in between loses nothing. A message that was run but not
yet acknowledged is delivered again; the result store (``SET NX``) makes that
harmless. A worker
shutting down warmly requeues its leftovers and removes its keys itself.

Every list item is hostile input (any producer holds the Redis password).
:func:`classify` sorts each fetched item before anything else reads it: one
over ``max_message_bytes`` is refused undecoded; one that is not JSON, is
nested too deep (``RecursionError`` in the decoder, or deeper than
``MAX_ENVELOPE_DEPTH``) or is not a kombu message is refused; every other one
gets a delivery tag of this worker's own. :func:`refuse` answers a refused item
under its ``headers.id`` when it has a usable one (through the guard) and puts
the others on the dead-letter list (``{reason, size_bytes, queue, at}``, never
the item), taking them off the in-flight list in the same transaction. Before,
kombu raised these out of the event loop, stopping the worker, and the item
went back on the queue for the next worker to die on.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from core.names import DEAD_LETTER_KEY, DEAD_LETTER_MAX, KEY_PREFIX
from core.transport import liveness
from core.validation import nesting_exceeds, usable_task_id

log = logging.getLogger("tiqu.fetch")

REGISTRY_KEY = KEY_PREFIX + "inflight"
INFLIGHT_PREFIX = KEY_PREFIX + "inflight:"
ALIVE_PREFIX = KEY_PREFIX + "alive:"
#: URL schemes and the transport classes that fetch this way (core.transport.kombu_redis),
#: for :func:`patch_redis_transport`.
TRANSPORT_ALIASES = {
    "redis": "core.transport.kombu_redis:Transport",
    "rediss": "core.transport.kombu_redis:Transport",
    "sentinel": "core.transport.kombu_redis:SentinelTransport",
}


@dataclass(frozen=True)
class InFlight:
    """One worker's in-flight list for the one queue it consumes."""

    queue: str
    node: str
    ttl_s: int  # of the liveness key
    held_ttl_s: int = 7200  # of the held set (core.transport.liveness)
    #: Items larger than this are refused before they are decoded.
    max_message_bytes: int = 262144
    #: Stores error envelopes for ``[(task_id, code, reason)]`` (core.transport.guard); raises
    #: when it cannot. Without it, every refused item is dead-lettered.
    answer: Callable[[list[tuple[str, str, str]]], None] | None = field(default=None,
                                                                         compare=False)

    @property
    def key(self) -> str:
        return f"{INFLIGHT_PREFIX}{self.queue}:{self.node}"

    @property
    def alive_key(self) -> str:
        return ALIVE_PREFIX + self.node


#: Seconds a fetch waits after Redis refused it, so that the loop does not spin.
REFUSED_PAUSE_S = 1.0
_refusals_logged_at = 0.0


def refused_for_now(err: BaseException) -> bool:
    """Whether a fetch failed because Redis refuses writes for now (or unblocked it)."""
    from core.transport.results import retryable

    global _refusals_logged_at
    if not (retryable(err) or str(err).upper().startswith("UNBLOCKED")):
        return False
    if time.monotonic() - _refusals_logged_at > 30:  # one line per 30 s of refusals
        _refusals_logged_at = time.monotonic()
        log.warning("Redis refused a fetch (%s); fetching again in %.0f s",
                    type(err).__name__, REFUSED_PAUSE_S)
    return True


class Refused(NamedTuple):
    """A fetched list item that is not delivered: answered under its task id, or dead-lettered."""

    raw: Any
    code: str
    reason: str
    task_id: str | None


def classify(raw: Any, max_bytes: int, loads: Any, to_str: Any) -> dict[str, Any] | Refused:
    """The parsed kombu message, with a delivery tag of this worker's own, or why not.

    An item over ``max_bytes`` is refused before it is decoded. The producer's
    delivery tag is replaced (:func:`mint_tag`): two messages that share one
    are two messages, each recorded and answered on its own.
    """
    size = len(raw) if isinstance(raw, (bytes, str)) else 0
    if size > max_bytes:
        return Refused(raw, "message_too_large", f"{size} bytes > max_message_bytes "
                                                 f"{max_bytes}", None)
    try:
        payload = loads(to_str(raw))
    except RecursionError:
        return Refused(raw, "nested_too_deep", "not decodable: nested too deep", None)
    except (ValueError, TypeError) as err:  # not UTF-8, not JSON
        return Refused(raw, "unreadable_message", f"not JSON ({type(err).__name__})", None)
    task_id = header_task_id(payload)
    if nesting_exceeds(payload, MAX_ENVELOPE_DEPTH):
        return Refused(raw, "nested_too_deep", f"nested deeper than {MAX_ENVELOPE_DEPTH}",
                       task_id)
    problem = envelope_problem(payload) or route_problem(payload)
    if problem is not None:
        return Refused(raw, "invalid_message", f"not a kombu message: {problem}", task_id)
    return mint_tag(dict(payload))


def route_problem(payload: dict[str, Any]) -> str | None:
    info = payload["properties"].get("delivery_info") or {}
    if isinstance(info.get("exchange"), str) and isinstance(info.get("routing_key"), str):
        return None
    return "properties.delivery_info has no exchange and routing_key"


#: Deepest JSON nesting of a queue item (a kombu envelope is 3 or 4 levels deep).
MAX_ENVELOPE_DEPTH = 32


def header_task_id(payload: Any) -> str | None:
    """``headers.id`` of a parsed list item when it can address a result, else ``None``."""
    headers = payload.get("headers") if isinstance(payload, dict) else None
    return usable_task_id(headers.get("id") if isinstance(headers, dict) else None)


def mint_tag(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with a fresh delivery tag: a tag is a key in ``unacked``, shared by all
    workers, so a producer's tag (a copy of another message's) is never trusted."""
    payload["properties"] = {**payload["properties"], "delivery_tag": uuid.uuid4().hex}
    return payload


def refuse(client: Any, inflight: InFlight, refused: list[Refused]) -> None:
    """Answer refused items that have a task id, dead-letter the others, take all off the list.

    Answers go first (``SET NX``: a repeat is harmless); the dead letters and the
    removal from the in-flight list share one transaction. Should either fail,
    the items stay on the list, and :func:`tend` puts them back on the queue.
    """
    if not refused:
        return
    for r in refused:
        log.warning("refused a queue item task_id=%s code=%s bytes=%d: %s", r.task_id, r.code,
                    len(r.raw), r.reason)
    answered = [r for r in refused if r.task_id is not None] if inflight.answer else []
    try:
        if answered and inflight.answer is not None:
            inflight.answer([(str(r.task_id), r.code, r.reason) for r in answered])
        pipe = client.pipeline()
        dead_letter(pipe, [dead_letter_entry(r.code, len(r.raw), inflight.queue)
                           for r in refused if r not in answered])
        for r in refused:
            pipe.lrem(inflight.key, 1, r.raw)
        pipe.execute()
    except Exception as err:  # back on the queue with the next tend; refused again then
        log.error("could not settle %d refused queue item(s): %s", len(refused),
                  type(err).__name__)


def dead_letter_entry(reason: str, size_bytes: int | None, queue: str | None) -> str:
    """One dead-letter entry: why, how big, from where, when; never the item itself."""
    return json.dumps({"reason": reason, "size_bytes": size_bytes, "queue": queue,
                       "at": datetime.now(UTC).isoformat()})


def dead_letter(pipe: Any, entries: list[str]) -> None:
    """Queue on ``pipe`` an LPUSH of ``entries`` to the dead-letter list, kept to its bound."""
    if entries:
        pipe.lpush(DEAD_LETTER_KEY, *entries)
        pipe.ltrim(DEAD_LETTER_KEY, 0, DEAD_LETTER_MAX - 1)


#: Most messages one fetch takes: the first by ``BRPOPLPUSH``, the rest by a
#: pipeline of ``RPOPLPUSH`` (one round trip), within the prefetch limit.
FETCH_MAX = 64


def register(client: Any, inflight: InFlight) -> None:
    client.set(inflight.alive_key, "1", ex=inflight.ttl_s)
    client.sadd(REGISTRY_KEY, inflight.key)


def unregister(client: Any, inflight: InFlight) -> None:
    """On shutdown, with no fetch outstanding: requeue leftovers, drop this node's keys."""
    _requeue(client, inflight.key, inflight.queue)
    client.srem(REGISTRY_KEY, inflight.key)
    client.delete(inflight.alive_key, liveness.held_key(inflight.node))


def tend(client: Any, inflight: InFlight, idle: bool,
         restore: Callable[[str], None] | None = None) -> int:
    """Refresh liveness and requeue orphaned messages; returns how many.

    ``idle`` means no fetch is outstanding, so this node's own list holds
    only leftovers. A node whose liveness key expired is dead: its in-flight
    list is emptied onto its queue, every message it held unacknowledged is
    put back with ``restore(tag)`` (core.transport.liveness.release), and it is
    unregistered.
    """
    register(client, inflight)
    moved = _requeue(client, inflight.key, inflight.queue) if idle else 0
    for raw in client.smembers(REGISTRY_KEY):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        queue, _, node = key[len(INFLIGHT_PREFIX):].partition(":")
        if node and node != inflight.node and not client.exists(ALIVE_PREFIX + node):
            moved += _requeue(client, key, queue)
            if restore is not None:
                moved += liveness.release(client, node, restore)
            client.srem(REGISTRY_KEY, key)
    if moved:
        log.warning("put %d in-flight message(s) of stopped fetches back on the queue", moved)
    return moved


def _requeue(client: Any, key: str, queue: str) -> int:
    moved = 0
    while client.rpoplpush(key, queue) is not None:  # one at a time, each atomic
        moved += 1
    return moved


class UnreadableMessage(ValueError):
    """A Redis list item that is JSON but not a kombu message envelope."""


def envelope_problem(raw: Any) -> str | None:
    """Why ``raw`` (a parsed list item) is not a kombu message, or ``None``."""
    if not isinstance(raw, dict):
        return f"not a JSON object ({type(raw).__name__})"
    props = raw.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("delivery_tag"), str):
        return "no properties.delivery_tag"
    if not isinstance(props.get("delivery_info", {}), dict):
        return "properties.delivery_info is not an object"
    if not isinstance(raw.get("headers") or {}, dict) or not isinstance(raw.get("body", ""), str):
        return "headers or body of the wrong type"
    return None


def patch_redis_transport() -> None:
    """Make ``kombu.Connection("redis://...")`` opened without a transport use tiqu's.

    The worker apps select :mod:`core.transport.kombu_redis` by module path
    (``broker_transport``) and do not call this. It is for code that opens its
    own kombu ``Connection`` from a URL (tests/test_fetch.py): it points kombu's
    URL-scheme aliases (``kombu.transport.TRANSPORT_ALIASES``, the table kombu
    resolves a URL's scheme through) at the subclasses, and forgets the classes
    kombu resolved for those schemes before. kombu's own classes are not changed.
    The paths are strings, resolved by kombu when a connection needs them.
    """
    from kombu import transport

    for scheme, path in TRANSPORT_ALIASES.items():
        transport.TRANSPORT_ALIASES[scheme] = path
        transport._transport_cache.pop(scheme, None)  # kombu caches a resolved alias
