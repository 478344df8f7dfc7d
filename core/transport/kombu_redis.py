"""tiqu's kombu transport: kombu's Redis transport with reliable fetch and a garbage filter.

The worker apps select it by module path, and the broker URL stays the one the
operator gave (``redis://``, ``rediss://`` or ``sentinel://``)::

    app.conf.update(kombu_redis.broker_settings(settings.redis_url))
    # broker_transport = "core.transport.kombu_redis:Transport"
    # (or ":SentinelTransport" for a sentinel:// URL)

kombu resolves a ``module:Class`` transport name itself
(``kombu.transport.resolve_transport``), and Celery passes ``broker_transport``
to every ``kombu.Connection`` it opens; a ``Connection`` given a transport keeps
it and only reads host, port, password, database and TLS from the URL. kombu's
own classes are not changed: a process that opens ``kombu.Connection("redis://")``
without naming this transport gets kombu's stock one.

What the subclasses add (the policy itself is in :mod:`core.transport.fetch`):

- :class:`Channel` (and :class:`SentinelChannel`): a channel given an in-flight
  list (:meth:`Channel.use_inflight`, by the guard when the worker consumes one
  queue) fetches with ``BRPOPLPUSH`` onto it, takes up to ``fetch.FETCH_MAX``
  messages per fetch, sorts them (``fetch.classify``), answers or dead-letters
  the refused ones (``fetch.refuse``) and records the rest as unacknowledged,
  held and off the list in one transaction (:meth:`Channel.record`). A fetch
  that Redis refuses for now waits and retries; an unreadable item on kombu's
  own BRPOP path is dead-lettered instead of stopping the worker.
- :class:`QoS`: ``append`` does only the in-memory part for a delivery tag
  :meth:`Channel.record` wrote to Redis already.
- :class:`Transport` (and :class:`SentinelTransport`): ``_deliver`` refuses a
  message that is not a kombu envelope (``fetch.envelope_problem``) before
  kombu reads it.

kombu's Redis transport is not a public API: this module overrides its
``_brpop_start``, ``_brpop_read`` and ``_deliver`` and reads ``_in_poll``,
``_queue_cycle``, ``_q_for_pri``, ``_create_client``, ``_flush_brpop_reauth``
and ``QoS._delivered``. It was written against kombu 5.7 and refuses to load
on another minor series (:func:`check_kombu_version`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from queue import Empty
from typing import Any

import kombu
from kombu.transport import redis as _kredis
from kombu.transport import virtual as _virtual
from kombu.utils import json as kjson
from kombu.utils.encoding import bytes_to_str

from core.transport import faults, fetch, liveness

log = logging.getLogger("tiqu.fetch")

# kombu's Redis transport has no annotations, and the types mypy infers from its
# class attributes are wrong (``_in_poll = False`` holds a connection), so the
# subclasses below see it as untyped.
kredis: Any = _kredis
virtual: Any = _virtual

#: The kombu minor series this module was written and tested against (pyproject:
#: ``kombu>=5.7,<5.8``).
KOMBU_SERIES = (5, 7)


class UnsupportedKombu(RuntimeError):
    """The installed kombu is not the minor series this transport was written for."""


def check_kombu_version(version: str | None = None) -> None:
    """Raise :class:`UnsupportedKombu` unless ``version`` (kombu's own) is in ``KOMBU_SERIES``.

    The subclasses override private methods of kombu's Redis channel: on another
    minor series those may be renamed or called differently, and the worker would
    run without reliable fetch without saying so.
    """
    found = kombu.__version__ if version is None else version
    parts = found.split(".")
    try:
        series = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        series = (-1, -1)
    if series != KOMBU_SERIES:
        wanted = ".".join(map(str, KOMBU_SERIES))
        raise UnsupportedKombu(
            f"core.transport.kombu_redis was written for kombu {wanted}.x, but kombu "
            f"{found} is installed; install kombu>={wanted},<{KOMBU_SERIES[0]}."
            f"{KOMBU_SERIES[1] + 1} (pyproject.toml), or port the transport to kombu {found}")


check_kombu_version()

#: The module paths ``broker_transport`` takes (kombu's ``module:Class`` form).
TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"


class StayOnConnection:
    """A kombu failover strategy that never switches URLs (for ``sentinel://`` lists).

    kombu's ``Connection.switch`` re-reads the transport from the next URL's
    scheme, so a ``sentinel://a;sentinel://b`` connection that failed over would
    continue on kombu's stock ``SentinelTransport``, without reliable fetch.
    Switching buys nothing there: every sentinel channel asks all the sentinels
    of the list for the master. ``Connection.maybe_switch_next`` switches only
    while the strategy is true, and this one is always false.
    """

    def __init__(self, alternates: list[str]) -> None:
        self.first = alternates[0] if alternates else None

    def __iter__(self) -> Iterator[str | None]:
        return self

    def __next__(self) -> str | None:
        return self.first

    def __bool__(self) -> bool:
        return False


def broker_settings(url: str) -> dict[str, Any]:
    """The Celery settings that select this transport for the broker at ``url``."""
    if url.startswith("sentinel://"):
        return {"broker_transport": SENTINEL_TRANSPORT,
                "broker_failover_strategy": StayOnConnection}
    return {"broker_transport": TRANSPORT}


class QoS(kredis.QoS):
    """kombu's Redis QoS; a message :meth:`Channel.record` wrote is not written again."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel.recorded_tags
        if delivery_tag in recorded:  # in Redis already (Channel.record)
            recorded.discard(delivery_tag)
            # virtual.QoS.append is the in-memory part of kombu's Redis QoS.append
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def held_tags(self) -> list[str]:
        """Delivery tags delivered on this channel and not yet acknowledged or put back."""
        return list(self._delivered)


class Channel(kredis.Channel):
    """kombu's Redis channel, fetching with ``BRPOPLPUSH`` once given an in-flight list."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: The one queue this channel consumes and its in-flight list; ``None`` until
        #: :meth:`use_inflight` (kombu's BRPOP is used until then).
        self.inflight: fetch.InFlight | None = None
        #: Delivery tags :meth:`record` wrote to ``unacked`` and QoS.append has not seen.
        self.recorded_tags: set[str] = set()
        #: A ``BRPOPLPUSH`` (not kombu's BRPOP) is outstanding.
        self.fetching = False
        #: The server's CLIENT ID of the consuming connection, and the socket it is for.
        self.consumer_client_id: int | None = None
        self._client_id_sock: Any = None
        #: One redis client for the records (kombu builds a new one per call).
        self._records_client: Any = None
        super().__init__(*args, **kwargs)

    # kept for tests/test_fetch.py, which reads and replaces the in-flight list by
    # these names
    @property
    def _tiqu_inflight(self) -> fetch.InFlight | None:
        return self.inflight

    @_tiqu_inflight.setter
    def _tiqu_inflight(self, inflight: fetch.InFlight | None) -> None:
        self.use_inflight(inflight)

    @property
    def _tiqu_recorded(self) -> set[str]:
        return self.recorded_tags

    # --- what the guard uses ------------------------------------------------------
    def use_inflight(self, inflight: fetch.InFlight | None) -> None:
        """Fetch with ``BRPOPLPUSH`` onto ``inflight`` from the next fetch on (``None``: stop)."""
        self.inflight = inflight

    def fetch_outstanding(self) -> bool:
        """A fetch (ours or kombu's BRPOP) was sent and its reply not read yet."""
        return bool(self._in_poll)

    def fetch_idle(self) -> bool:
        """A fetch has completed on this channel and no other is outstanding.

        Only then is everything on this node's in-flight list a leftover.
        """
        return self._in_poll is None

    def settle_fetch(self) -> bool:
        """Unblock the outstanding fetch (``CLIENT UNBLOCK``) and read its reply.

        A fetch that popped nothing returns nil (``queue.Empty`` is raised); one
        that popped a message delivers it the normal way (recorded, buffered).
        ``False`` when no reply came within ``brpop_timeout + 2`` s: the fetch
        stays outstanding.
        """
        conn = self._in_poll
        if not conn:
            return True
        if self.consumer_client_id is not None:
            with self.conn_or_acquire() as client:
                client.execute_command("CLIENT", "UNBLOCK", self.consumer_client_id)
        # Without CLIENT UNBLOCK the reply still comes within brpop_timeout.
        if not conn.can_read(timeout=self.brpop_timeout + 2):
            return False
        self._brpop_read()
        return True

    # --- kombu's fetch, overridden ----------------------------------------------------
    def _brpop_start(self, timeout: Any = None) -> None:
        self._remember_client_id()
        self.fetching = False
        if self.inflight is not None and self._start_fetch(self.inflight, timeout):
            return
        super()._brpop_start(timeout)

    def _brpop_read(self, **options: Any) -> bool:
        fetching = self.fetching
        try:
            if fetching:
                return self._read_fetch()
            return bool(super()._brpop_read(**options))
        except (ValueError, KeyError, TypeError, RecursionError) as err:  # JSON, base64, shape
            # Other errors' messages can quote the item; log only their type.
            reason = str(err) if isinstance(err, fetch.UnreadableMessage) else type(err).__name__
            log.error("dropped an unreadable message from the broker: %s", reason)
            if not fetching:  # kombu's BRPOP took it: its size and queue are unknown here
                self._dead_letter_now("unreadable_message")
            return True

    # --- reliable fetch ---------------------------------------------------------------
    def _start_fetch(self, inflight: fetch.InFlight, timeout: Any) -> bool:
        """Send ``BRPOPLPUSH`` in place of kombu's BRPOP; ``False`` where it does not apply."""
        keys = [self._q_for_pri(q, p) for q in self.active_queues for p in self.priority_steps]
        if keys != [inflight.queue] or self.global_keyprefix:
            return False
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.fetching = True
        wait = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command("BRPOPLPUSH", inflight.queue, inflight.key,
                                            wait or 0)
        return True

    def _read_fetch(self) -> bool:
        """Read a ``BRPOPLPUSH`` reply and deliver its messages, as kombu's ``_brpop_read``."""
        inflight = self.inflight
        assert inflight is not None  # a fetch is sent only with one
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BRPOPLPUSH")
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except Exception as err:  # refused for now (OOM, READONLY): wait, never stop
                if not fetch.refused_for_now(err):
                    raise
                time.sleep(fetch.REFUSED_PAUSE_S)
                raise Empty() from err
            if item is None:
                raise Empty()
            self._queue_cycle.rotate(inflight.queue)
        finally:
            self._in_poll = None
            self.fetching = False
            self._flush_brpop_reauth()
        self._take(inflight, [item, *self._pop(inflight, self._room() - 1)])
        return True

    def fetch_now(self) -> int:
        """Take what the queue holds now, up to the prefetch room, without blocking.

        For a batch that takes more work while it runs (workers.batching): the
        messages are moved onto the in-flight list, recorded and delivered
        exactly as after a blocking fetch (:meth:`_take`). Returns how many were
        taken; 0 without the reliable fetch, or while a fetch is outstanding
        (settle it first: Guard.settle_pending_pop).
        """
        inflight = self.inflight
        if inflight is None or self._in_poll:
            return 0
        items = self._pop(inflight, self._room())
        if items:
            self._take(inflight, items)
        return len(items)

    def _take(self, inflight: fetch.InFlight, items: list[Any]) -> None:
        """Sort fetched raw items, refuse the bad ones, record and deliver the rest."""
        faults.point("after_fetch")
        sorted_out = [fetch.classify(x, inflight.max_message_bytes, kjson.loads, bytes_to_str)
                      for x in items]
        kept = [(x, p) for x, p in zip(items, sorted_out, strict=True) if isinstance(p, dict)]
        fetch.refuse(self.records_client(), inflight,
                     [p for p in sorted_out if isinstance(p, fetch.Refused)])
        self.record(inflight, kept)
        faults.point("after_record")
        try:
            for _raw, payload in kept:
                self.connection._deliver(payload, inflight.queue)
        finally:
            # Recorded as unacknowledged but never delivered (a delivery raised): back on
            # the queue now, not after the visibility timeout.
            left = self.recorded_tags
            for tag in sorted(left):
                self.qos.restore_by_tag(tag, client=self.records_client())
            left.clear()

    def _room(self) -> int:
        """How many messages one fetch may take: the prefetch room, at most FETCH_MAX."""
        room = self.qos.can_consume_max_estimate()
        return min(fetch.FETCH_MAX, room if room is not None else 1)

    def _pop(self, inflight: fetch.InFlight, n: int) -> list[Any]:
        """Up to ``n`` messages, moved onto the in-flight list at once.

        After a blocking fetch returned one message, the queue often holds more;
        taking them one blocking round trip each cost a third of a fast engine's
        worker time. Each ``RPOPLPUSH`` is atomic, so the messages are on the queue
        or on the list, as for the first.
        """
        if n <= 0:
            return []
        pipe = self.records_client().pipeline(transaction=False)
        for _ in range(n):
            pipe.rpoplpush(inflight.queue, inflight.key)
        return [x for x in pipe.execute() if x is not None]

    def record(self, inflight: fetch.InFlight, kept: list[tuple[Any, dict[str, Any]]]) -> None:
        """Record fetched messages as unacknowledged and take them off the list, at once.

        One ``MULTI``/``EXEC`` writes what kombu's ``QoS.append`` writes for each
        (``ZADD`` to the unacked index, ``HSET`` of ``[message, exchange,
        routing_key]``), adds them to this node's held set and removes them from
        the in-flight list, so each is in exactly one of the two. kombu does this
        per message, with a new redis client each time, as the message is
        delivered; :meth:`QoS.append` then only does the in-memory part for these
        delivery tags. On a fast engine that per-message round trip was half of
        the worker's time.
        """
        self.recorded_tags = set()
        if not kept:
            return
        qos = self.qos
        now = time.time()
        rows = {}
        for _raw, payload in kept:
            props = payload["properties"]
            info = props["delivery_info"]
            rows[props["delivery_tag"]] = kjson.dumps([payload, info["exchange"],
                                                 info["routing_key"]])
        pipe = self.records_client().pipeline()
        pipe.zadd(qos.unacked_index_key, dict.fromkeys(rows, now))
        pipe.hset(qos.unacked_key, mapping=rows)
        liveness.hold(pipe, inflight.node, list(rows), inflight.held_ttl_s)
        for raw, _ in kept:
            pipe.lrem(inflight.key, 1, raw)
        pipe.execute()
        self.recorded_tags = set(rows)

    def records_client(self) -> Any:
        """A redis client kept on the channel (kombu's ``_create_client`` builds one per call)."""
        if self._records_client is None:
            self._records_client = self._create_client()
        return self._records_client

    def _remember_client_id(self) -> None:
        """Ask for the consuming connection's CLIENT ID, once per socket, before a fetch."""
        conn = self.client.connection
        sock = getattr(conn, "_sock", None)  # redis-py's socket of this connection
        if sock is None or sock is self._client_id_sock:
            return
        self._client_id_sock = sock
        self.consumer_client_id = None
        try:
            conn.send_command("CLIENT", "ID")
            self.consumer_client_id = int(conn.read_response())
        except Exception as err:  # CLIENT may be disabled; settling then waits for the reply
            log.info("no CLIENT ID for the consuming connection: %s", type(err).__name__)

    def _dead_letter_now(self, reason: str) -> None:
        try:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline()
                fetch.dead_letter(pipe, [fetch.dead_letter_entry(reason, None, None)])
                pipe.execute()
        except Exception as err:  # logged above already; nothing of the item is left to keep
            log.warning("could not dead-letter: %s", type(err).__name__)


class SentinelChannel(Channel, kredis.SentinelChannel):
    """:class:`Channel` on kombu's sentinel channel (the master asked of the sentinels)."""


class Transport(kredis.Transport):
    """kombu's Redis transport with :class:`Channel`; refuses non-envelopes before delivery."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        problem = fetch.envelope_problem(message)
        if problem is not None:
            raise fetch.UnreadableMessage(problem)
        super()._deliver(message, queue)


class SentinelTransport(Transport, kredis.SentinelTransport):
    """:class:`Transport` for ``sentinel://`` URLs."""

    Channel = SentinelChannel


#: Names this module adds to kombu's classes; a kombu that defines one itself is refused.
_OWN_NAMES = ("inflight", "recorded_tags", "fetching", "consumer_client_id", "_client_id_sock",
              "_records_client", "use_inflight", "fetch_outstanding", "fetch_idle",
              "settle_fetch", "_start_fetch", "_read_fetch", "fetch_now", "_take", "_room",
              "_pop", "record", "records_client", "_remember_client_id", "_dead_letter_now",
              "held_tags")
_CLASHES = [name for name in _OWN_NAMES
            if hasattr(kredis.Channel, name) or hasattr(kredis.QoS, name)]
if _CLASHES:
    raise UnsupportedKombu(f"kombu {kombu.__version__} defines {', '.join(_CLASHES)} on its "
                           "Redis channel or QoS; core.transport.kombu_redis would shadow it")
