"""Redis URLs and clients: the one client factory and the one URL mask.

Every Redis connection tiqu opens outside Celery goes through
:func:`client_from_url`; every message or log line that shows a Redis URL shows
:func:`mask_url` of it. TLS options are decided by the URL being opened, so a
``redis://`` broker with a ``rediss://`` result backend (or the reverse) gets
TLS on exactly the connection that asks for it.
"""

from __future__ import annotations

import ssl
from typing import Any

import redis

MASK = "***"

#: Query parameters that carry a secret (``unix:///run/redis.sock?password=...``).
_SECRET_PARAMS = frozenset({"password", "pass", "auth"})


def mask_url(url: str) -> str:
    """``url`` with every password replaced by ``***``.

    Covers ``redis://:pass@host``, ``redis://user:pass@host``, ``rediss://``,
    ``unix://...?password=pass`` and passwords holding unescaped ``@``, ``/``
    or ``:`` (everything before the last ``@`` is the user part). A user name
    without a password (``redis://secret@host``) is masked too, since some
    clients read it as the password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at, q = rest.rfind("@"), rest.find("?")
    # An "@" inside a query value (?password=a@b) is not the end of a user part.
    prefix = ""
    if at >= 0 and (q < 0 or q > at or "=" not in rest[q:at]):
        user, colon, _ = rest[:at].partition(":")
        prefix, rest = (f"{user}:{MASK}@" if colon else f"{MASK}@"), rest[at + 1:]
    head, qmark, query = rest.partition("?")
    head = prefix + head
    if query:
        query = "&".join(_mask_param(pair) for pair in query.split("&"))
    return scheme + sep + head + qmark + query


def _mask_param(pair: str) -> str:
    key, eq, _ = pair.partition("=")
    return f"{key}={MASK}" if eq and key.lower() in _SECRET_PARAMS else pair


def is_tls(url: str) -> bool:
    """Whether ``url`` asks for TLS (``rediss://``)."""
    return url.startswith("rediss://")


def tls_options(url: str, ca: str | None, verify: bool) -> dict[str, Any] | None:
    """redis-py (and Celery ``*_use_ssl``) TLS options for ``url``; None unless rediss://."""
    if not is_tls(url):
        return None
    opts: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE}
    if ca:
        opts["ssl_ca_certs"] = ca
    return opts


def client_from_url(url: str, settings: Any, **kw: Any) -> redis.Redis:
    """A redis-py client for ``url``; TLS per ``url``, CA and verification from ``settings``.

    ``settings`` needs ``redis_tls_ca`` and ``redis_tls_verify`` (a
    :class:`core.settings.Settings`); ``kw`` goes to ``redis.Redis.from_url``.
    """
    tls = tls_options(url, settings.redis_tls_ca, settings.redis_tls_verify)
    if url.startswith("sentinel://"):
        return sentinel_client(url, getattr(settings, "sentinel_master", None), **kw)
    return redis.Redis.from_url(url, **(tls or {}), **kw)


def sentinel_client(url: str, master: str | None, **kw: Any) -> redis.Redis:
    """A client of the master that the sentinels of ``url`` name ``master``.

    ``url`` is Celery's form, ``sentinel://[:pass@]h1:26379[/db];sentinel://h2:26379``:
    the password and database of the first entry are the master's. No
    connection is opened here; each command asks the sentinels where the
    master is, so a failover is followed.
    """
    from urllib.parse import unquote, urlsplit

    from redis.sentinel import Sentinel

    from core.errors import ConfigError

    if not master:
        raise ConfigError("a sentinel:// URL needs the master's name (TIQU_SENTINEL_MASTER)")
    parts = [urlsplit(u) for u in url.split(";") if u.strip()]
    hosts = [(p.hostname or "localhost", p.port or 26379) for p in parts]
    first = parts[0]
    db = int(first.path.strip("/") or 0)
    password = unquote(first.password) if first.password else None
    username = unquote(first.username) if first.username else None
    client_kw = {k: v for k, v in kw.items() if k in (
        "socket_timeout", "socket_connect_timeout", "decode_responses", "health_check_interval",
        "retry_on_timeout", "socket_keepalive", "max_connections")}
    sentinel = Sentinel(hosts, socket_timeout=kw.get("socket_timeout", 5))
    client: redis.Redis = sentinel.master_for(master, db=db, password=password, username=username,
                                              **client_kw)
    return client
