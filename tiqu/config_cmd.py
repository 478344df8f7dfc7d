"""``tiqu config``: the effective settings (``TIQU_*`` environment and flags),
secrets masked.

Passwords in URLs show as ``***`` (:func:`core.redis.mask_url`, each entry of a
``sentinel://a;sentinel://b`` list on its own); secret fields (basic auth,
signing key) show as ``***`` when set and empty when not. Output is one
``TIQU_<FIELD>=value`` line per setting, or a JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from core.redis import MASK, mask_url
from core.settings import Settings

#: Settings holding URLs that may carry a password.
URL_FIELDS = ("redis_url", "result_url")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="print the effective settings, secrets masked")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.set_defaults(func=run)


def masked_url(url: str) -> str:
    """``url`` with every password masked, each ``;``-separated entry on its own."""
    return ";".join(mask_url(part) for part in url.split(";"))


def shown_value(name: str, value: Any) -> Any:
    """A setting's value as printed: secrets masked, paths as text, None as None."""
    if isinstance(value, SecretStr):
        return MASK
    if name in URL_FIELDS and isinstance(value, str):
        return masked_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def effective(settings: Settings) -> dict[str, Any]:
    """``{TIQU_<FIELD>: shown value}`` for every field, in declaration order."""
    return {f"TIQU_{name.upper()}": shown_value(name, getattr(settings, name))
            for name in type(settings).model_fields}


def _line_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run(args: argparse.Namespace, settings: Settings) -> int:
    shown = effective(settings)
    if args.json:
        json.dump(shown, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        for key, value in shown.items():
            sys.stdout.write(f"{key}={_line_value(value)}\n")
    return 0
