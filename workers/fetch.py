"""The Redis transport, made safe: no popped message only in a socket, no crash on garbage.

kombu takes a message with BRPOP and records it as unacknowledged only after
reading the reply, so a worker killed in between loses it: the message has
left the queue and exists nowhere else. When a worker consumes one Redis list
(one queue, ``priority_steps`` ``[0]``), it fetches with ``BRPOPLPUSH``
instead, which moves the message atomically onto a list of the worker's own
(``tiqu:inflight:<queue>:<node>``, registered in the set ``tiqu:inflight``);
it leaves that list in the same transaction that records it as unacknowledged.
When the queue holds more, one fetch takes up to ``FETCH_MAX`` messages in two
round trips and records them all in a third (:func:`_record`).

:func:`tend` runs every few seconds on each worker: it refreshes the worker's
liveness key (``tiqu:alive:<node>``), puts its own leftovers back on the queue
(anything on its list while no fetch is outstanding, e.g. a reply kombu
discarded) and does the same for every node whose liveness key has expired.
A message is on the list or in ``unacked``, never in both (one transaction
moves it), so a death in between loses nothing. A message that was run but not
yet acknowledged is delivered again; the result store (``SET NX``) makes that
harmless. A worker
shutting down warmly requeues its leftovers and removes its keys itself.

:func:`patch_redis_transport` also drops list items that are not kombu
messages (not JSON, no delivery tag, a body that is not base64), which kombu
would otherwise raise out of the event loop, stopping the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty
from typing import Any

from core.names import KEY_PREFIX

log = logging.getLogger("tiqu.fetch")

REGISTRY_KEY = KEY_PREFIX + "inflight"
INFLIGHT_PREFIX = KEY_PREFIX + "inflight:"
ALIVE_PREFIX = KEY_PREFIX + "alive:"
_PATCHED = "_tiqu_patched"
CLIENT_ID = "_tiqu_client_id"


@dataclass(frozen=True)
class InFlight:
    """One worker's in-flight list for the one queue it consumes."""

    queue: str
    node: str
    ttl_s: int

    @property
    def key(self) -> str:
        return f"{INFLIGHT_PREFIX}{self.queue}:{self.node}"

    @property
    def alive_key(self) -> str:
        return ALIVE_PREFIX + self.node


def start(channel: Any, inflight: InFlight, timeout: Any) -> bool:
    """Send ``BRPOPLPUSH`` in place of kombu's BRPOP; ``False`` where it does not apply."""
    keys = [channel._q_for_pri(q, p) for q in channel.active_queues
            for p in channel.priority_steps]
    if keys != [inflight.queue] or channel.global_keyprefix:
        return False
    channel._in_poll = channel.client.connection
    channel._brpop_sent_at = time.monotonic()
    channel._tiqu_fetching = True
    wait = channel.brpop_timeout if timeout is None else timeout
    channel.client.connection.send_command("BRPOPLPUSH", inflight.queue, inflight.key, wait or 0)
    return True


def read(channel: Any) -> bool:
    """Read a ``BRPOPLPUSH`` reply and deliver its message, as kombu's ``_brpop_read`` does."""
    from kombu.utils.encoding import bytes_to_str
    from kombu.utils.json import loads

    inflight: InFlight = channel._tiqu_inflight
    try:
        try:
            item = channel.client.parse_response(channel.client.connection, "BRPOPLPUSH")
        except channel.connection_errors:
            channel.client.connection.disconnect()
            raise
        if item is None:
            raise Empty()
        channel._queue_cycle.rotate(inflight.queue)
    finally:
        channel._in_poll = None
        channel._tiqu_fetching = False
        if hasattr(channel, "_flush_brpop_reauth"):
            channel._flush_brpop_reauth()
    items = [item, *_fetch_more(channel, inflight)]
    payloads = [_payload(x, loads, bytes_to_str) for x in items]
    _record(channel, inflight, [(x, p) for x, p in zip(items, payloads, strict=True) if p])
    try:
        for raw, payload in zip(items, payloads, strict=True):
            if payload is not None:
                channel.connection._deliver(payload, inflight.queue)
                continue
            try:  # kombu's own path, which takes it off the list and raises
                _deliver_one(channel, inflight, raw, loads, bytes_to_str)
            except (ValueError, KeyError, TypeError) as err:
                reason = str(err) if isinstance(err, UnreadableMessage) else type(err).__name__
                log.error("dropped an unreadable message from the broker: %s", reason)
    finally:
        # Recorded as unacknowledged but never delivered (a delivery raised): back on
        # the queue now, not after the visibility timeout.
        left = channel._tiqu_recorded
        for tag in sorted(left):
            channel.qos.restore_by_tag(tag, client=_client(channel))
        left.clear()
    return True


def _payload(raw: Any, loads: Any, to_str: Any) -> dict[str, Any] | None:
    """The parsed message, or ``None`` where it is not a well-formed kombu message."""
    try:
        payload = loads(to_str(raw))
    except (ValueError, TypeError):
        return None
    if envelope_problem(payload) is not None:
        return None
    info = payload["properties"].get("delivery_info") or {}
    if not isinstance(info.get("exchange"), str) or not isinstance(info.get("routing_key"), str):
        return None
    return dict(payload)


def _record(channel: Any, inflight: InFlight, fetched: list[tuple[Any, dict[str, Any]]]) -> None:
    """Record fetched messages as unacknowledged and take them off the list, at once.

    One ``MULTI``/``EXEC`` writes what kombu's ``QoS.append`` writes for each
    (``ZADD`` to the unacked index, ``HSET`` of ``[message, exchange,
    routing_key]``) and removes them from the in-flight list, so each is in
    exactly one of the two. kombu does this per message, with a new redis client
    each time, as the message is delivered; the patched ``append`` then only
    does the in-memory part for these delivery tags. On a fast engine that
    per-message round trip was half of the worker's time.
    """
    channel._tiqu_recorded = set()
    if not fetched:
        return
    from kombu.utils.json import dumps

    qos = channel.qos
    now = time.time()
    rows = {}
    for _raw, payload in fetched:
        props = payload["properties"]
        info = props["delivery_info"]
        rows[props["delivery_tag"]] = dumps([payload, info["exchange"], info["routing_key"]])
    pipe = _client(channel).pipeline()
    pipe.zadd(qos.unacked_index_key, dict.fromkeys(rows, now))
    pipe.hset(qos.unacked_key, mapping=rows)
    for raw, _ in fetched:
        pipe.lrem(inflight.key, 1, raw)
    pipe.execute()
    channel._tiqu_recorded = set(rows)


#: Most messages one fetch takes: the first by ``BRPOPLPUSH``, the rest by a
#: pipeline of ``RPOPLPUSH`` (one round trip), within the prefetch limit.
FETCH_MAX = 64


def _fetch_more(channel: Any, inflight: InFlight) -> list[Any]:
    """Up to ``FETCH_MAX - 1`` more messages, moved onto the in-flight list at once.

    After a blocking fetch returned one message, the queue often holds more;
    taking them one blocking round trip each cost a third of a fast engine's
    worker time. Each ``RPOPLPUSH`` is atomic, so the messages are on the queue
    or on the list, as for the first.
    """
    room = channel.qos.can_consume_max_estimate()
    n = min(FETCH_MAX, room if room is not None else 1) - 1
    if n <= 0:
        return []
    pipe = _client(channel).pipeline(transaction=False)
    for _ in range(n):
        pipe.rpoplpush(inflight.queue, inflight.key)
    return [x for x in pipe.execute() if x is not None]


def _deliver_one(channel: Any, inflight: InFlight, item: Any, loads: Any, to_str: Any) -> None:
    channel._tiqu_fetched = item
    try:
        channel.connection._deliver(loads(to_str(item)), inflight.queue)
    except Exception:
        recorded(channel)  # not a message kombu can take: off the list as well
        raise


def _client(channel: Any) -> Any:
    """A redis client kept on the channel (kombu builds a new one per call)."""
    client = getattr(channel, "_tiqu_client", None)
    if client is None:
        client = channel._tiqu_client = channel._create_client()
    return client


def recorded(channel: Any) -> None:
    """The fetched message is now in ``unacked`` (or unusable): take it off the list."""
    item = getattr(channel, "_tiqu_fetched", None)
    if item is None:
        return
    channel._tiqu_fetched = None
    try:
        with channel.conn_or_acquire() as client:
            client.lrem(channel._tiqu_inflight.key, 1, item)
    except Exception as err:  # left on the list: put back later, delivered twice at worst
        log.warning("could not take a fetched message off the list: %s", type(err).__name__)


def register(client: Any, inflight: InFlight) -> None:
    client.set(inflight.alive_key, "1", ex=inflight.ttl_s)
    client.sadd(REGISTRY_KEY, inflight.key)


def unregister(client: Any, inflight: InFlight) -> None:
    """On shutdown, with no fetch outstanding: requeue leftovers, drop this node's keys."""
    _requeue(client, inflight.key, inflight.queue)
    client.srem(REGISTRY_KEY, inflight.key)
    client.delete(inflight.alive_key)


def tend(client: Any, inflight: InFlight, idle: bool) -> int:
    """Refresh liveness and requeue orphaned in-flight messages; returns how many.

    ``idle`` means no fetch is outstanding, so this node's own list holds
    only leftovers. Lists of nodes whose liveness key expired are emptied
    onto their queue and unregistered.
    """
    register(client, inflight)
    moved = _requeue(client, inflight.key, inflight.queue) if idle else 0
    for raw in client.smembers(REGISTRY_KEY):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        queue, _, node = key[len(INFLIGHT_PREFIX):].partition(":")
        if node and node != inflight.node and not client.exists(ALIVE_PREFIX + node):
            moved += _requeue(client, key, queue)
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


def remember_client_id(conn: Any) -> None:
    """Cache the server's id for ``conn`` (CLIENT ID), once per socket, before a fetch."""
    sock = getattr(conn, "_sock", None)
    if sock is None or getattr(conn, "_tiqu_sock", None) is sock:
        return
    conn._tiqu_sock = sock
    setattr(conn, CLIENT_ID, None)
    try:
        conn.send_command("CLIENT", "ID")
        setattr(conn, CLIENT_ID, int(conn.read_response()))
    except Exception as err:  # CLIENT may be disabled; settling then waits for the reply
        log.info("no CLIENT ID for the consuming connection: %s", type(err).__name__)


def patch_redis_transport() -> None:
    """Install reliable fetch and the garbage filter on kombu's Redis transport (once)."""
    from kombu.transport import redis as kredis
    from kombu.transport import virtual

    channel = kredis.Channel
    if getattr(channel, _PATCHED, False):
        return
    channel._brpop_start = _wrap_start(channel._brpop_start)  # type: ignore[method-assign]
    channel._brpop_read = _wrap_read(channel._brpop_read)  # type: ignore[method-assign]
    original_deliver = kredis.Transport._deliver
    original_append = kredis.QoS.append

    def _deliver(self: Any, message: Any, queue: str) -> Any:
        problem = envelope_problem(message)
        if problem is not None:
            raise UnreadableMessage(problem)
        return original_deliver(self, message, queue)

    def append(self: Any, message: Any, delivery_tag: str) -> Any:
        done = getattr(self.channel, "_tiqu_recorded", None)
        if done and delivery_tag in done:  # in Redis already (_record)
            done.discard(delivery_tag)
            return virtual.QoS.append(self, message, delivery_tag)
        result = original_append(self, message, delivery_tag)
        recorded(self.channel)
        return result

    kredis.Transport._deliver = _deliver  # type: ignore[method-assign]
    kredis.QoS.append = append  # type: ignore[method-assign]
    setattr(channel, _PATCHED, True)


def _wrap_start(original: Callable[..., Any]) -> Callable[..., Any]:
    def _brpop_start(self: Any, timeout: Any = None) -> Any:
        remember_client_id(self.client.connection)
        self._tiqu_fetching = False
        inflight = getattr(self, "_tiqu_inflight", None)
        if inflight is not None and start(self, inflight, timeout):
            return None
        return original(self, timeout)

    return _brpop_start


def _wrap_read(original: Callable[..., Any]) -> Callable[..., Any]:
    def _brpop_read(self: Any, **options: Any) -> Any:
        try:
            if getattr(self, "_tiqu_fetching", False):
                return read(self)
            return original(self, **options)
        except (ValueError, KeyError, TypeError) as err:  # JSON, base64 or shape errors
            # Other errors' messages can quote the item; log only their type.
            reason = str(err) if isinstance(err, UnreadableMessage) else type(err).__name__
            log.error("dropped an unreadable message from the broker: %s", reason)
            return True

    return _brpop_read
