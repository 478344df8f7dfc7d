"""``tiqu flower``: Flower for the tiqu app, safe by default.

Flower binds 127.0.0.1 unless ``--address`` says otherwise, and refuses to
start (exit code 2) on any other address without authentication, because its
HTTP API can send tasks and read results, which hold personal data. Basic-auth
credentials come from ``--basic-auth user:pass``, ``TIQU_FLOWER_BASIC_AUTH`` or
Flower's own ``FLOWER_BASIC_AUTH`` (in that order); they reach Flower through
its environment, never its argv, so they do not show in ``ps``. Flower's OAuth
(``FLOWER_AUTH`` = the regular expression of e-mails let in, with
``FLOWER_AUTH_PROVIDER``, ``FLOWER_OAUTH2_KEY``, ``FLOWER_OAUTH2_SECRET`` and
``FLOWER_OAUTH2_REDIRECT_URI``) counts as authentication when all of those are
set; they pass through to Flower unchanged.

Flower runs as ``celery -A tiqu.flower flower``: the app is a plain
``make_celery(settings)`` (JSON, routes, result backend), without the worker
runtime, so the Flower host needs neither torch nor a model.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from core.errors import ConfigError
from core.settings import Settings

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555


def add_parser(sub: Any) -> None:
    p = sub.add_parser("flower", help="start Flower (auth required off loopback)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (default 5555)")
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help="bind address (default 127.0.0.1); others need basic auth")
    p.add_argument("--basic-auth", help="user:password[,user2:password2] "
                   "(prefer TIQU_FLOWER_BASIC_AUTH: argv is visible to other users)")
    p.add_argument("--url-prefix", help="serve under this path, behind a reverse proxy")
    p.set_defaults(func=run)


def is_loopback(address: str) -> bool:
    """True only for addresses that cannot be reached from another machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "" (all interfaces), "0.0.0.0"-style names, host names
        return False


def check_auth(auth: str) -> None:
    """Every comma-separated entry must be ``user:password`` with both parts set."""
    for n, entry in enumerate(auth.split(","), start=1):
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigError(
                f"basic auth entry {n} must be user:password, got "
                f"user={user.strip()!r} and a password of {len(password)} chars")


#: Flower's OAuth settings (its own environment variables); all must be set.
OAUTH_VARS = ("FLOWER_AUTH", "FLOWER_AUTH_PROVIDER", "FLOWER_OAUTH2_KEY",
              "FLOWER_OAUTH2_SECRET", "FLOWER_OAUTH2_REDIRECT_URI")


def oauth_configured(environ: Mapping[str, str]) -> bool:
    """True when Flower's OAuth is fully set in ``environ``; ConfigError when it is
    half set or ``FLOWER_AUTH`` is not a regular expression (Flower would then
    start without it)."""
    present = [v for v in OAUTH_VARS if environ.get(v, "").strip()]
    if not present:
        return False
    missing = [v for v in OAUTH_VARS if v not in present]
    if missing:
        raise ConfigError(f"Flower OAuth is incomplete: {', '.join(missing)} not set")
    try:
        re.compile(environ["FLOWER_AUTH"])
    except re.error as err:
        raise ConfigError(f"FLOWER_AUTH is not a regular expression ({err})") from err
    return True


def flower_command(args: argparse.Namespace, settings: Settings,
                   environ: Mapping[str, str] | None = None
                   ) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` of the Flower process; raises ConfigError when unsafe.

    ``environ`` (default ``os.environ``) supplies Flower's own variables.
    """
    environ = os.environ if environ is None else environ
    auth = args.basic_auth or (settings.flower_basic_auth.get_secret_value()
                               if settings.flower_basic_auth else None) \
        or environ.get("FLOWER_BASIC_AUTH") or None
    oauth = oauth_configured(environ)
    if auth:
        check_auth(auth)
    elif not oauth and not is_loopback(args.address):
        raise ConfigError(
            f"flower address {args.address!r} is not loopback and basic auth is not set; "
            "pass --basic-auth user:pass or set TIQU_FLOWER_BASIC_AUTH (or Flower's "
            f"FLOWER_BASIC_AUTH or OAuth variables), or bind {DEFAULT_ADDRESS}")
    argv = [sys.executable, "-m", "celery", "-A", "tiqu.flower", "flower",
            f"--address={args.address}", f"--port={args.port}"]
    if args.url_prefix:
        argv.append(f"--url_prefix={args.url_prefix}")
    env = {k: v for k, v in environ.items() if k != "FLOWER_BASIC_AUTH"}
    env["TIQU_REDIS_URL"] = settings.redis_url
    if auth:
        env["FLOWER_BASIC_AUTH"] = auth
    return argv, env


def _auth_kind(env: Mapping[str, str]) -> str:
    kinds = [k for k, on in (("basic auth", "FLOWER_BASIC_AUTH" in env),
                             ("OAuth", bool(env.get("FLOWER_AUTH")))) if on]
    return " and ".join(kinds) or "no auth, loopback only"


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        argv, env = flower_command(args, settings)
    except ConfigError as err:
        print(f"tiqu flower: {err}", file=sys.stderr)
        return 2
    print(f"tiqu flower: http://{args.address}:{args.port} "
          f"({_auth_kind(env)})",
          file=sys.stderr, flush=True)
    # exec: Flower gets the signals (SIGTERM stops it) and the exit code directly.
    os.execve(argv[0], argv, env)
    return 0  # pragma: no cover - execve does not return


@functools.cache
def _app() -> Any:
    from core.queue import make_celery

    return make_celery(Settings())


def __getattr__(name: str) -> Any:
    """``celery -A tiqu.flower`` finds the app here, built from TIQU_* settings."""
    if name in ("app", "celery"):
        return _app()
    raise AttributeError(name)
