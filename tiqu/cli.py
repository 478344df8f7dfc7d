"""``tiqu <command> ...``: imports only the module the command needs.

Each command module exposes ``add_parser(subparsers)`` (which sets
``func=run``) and ``run(args, settings) -> int``. Settings are built here,
once, from ``TIQU_*`` variables and global flags, and passed down.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "model": ("workers.cli_model", "fetch or inspect the base model"),
    "worker": ("workers.launch", "start extraction/training workers (one per GPU)"),
    "enqueue": ("producer.cli", "enqueue complaints from a file or stdin"),
    "extract": ("producer.cli", "enqueue a file and write one envelope per line"),
    "collect": ("producer.cli", "collect the results of an earlier enqueue --ids"),
    "data": ("trainer.cli_data", "synthesise, check and convert data sets"),
    "train": ("trainer.cli", "fine-tune a LoRA adapter (locally or on the train queue)"),
    "eval": ("trainer.cli", "score a model/adapter on a data set"),
    "study": ("trainer.study", "what k corrections buy: retrain from an adapter, score"),
    "adapters": ("tiqu.adapters_cli", "list, publish, promote and roll back adapters"),
    "status": ("tiqu.status", "workers, GPUs, adapters, queue lengths, in-flight tasks"),
    "bench": ("tiqu.bench", "end-to-end throughput benchmark against the seed loop"),
    "soak": ("tiqu.soak", "run tasks while killing workers; count lost answers"),
    "flower": ("tiqu.flower", "start Flower (auth required off loopback)"),
    "config": ("tiqu.config_cmd", "print the effective settings, secrets masked"),
    "review": ("tiqu.review", "review flagged answers, store corrections (web page)"),
    "demo": ("tiqu.demo", "Redis + model + worker + a sample file, end to end"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiqu",
        description="Extract {name, address, email, question} from complaint texts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<10} {h}" for k, (_, h) in COMMANDS.items()),
    )
    parser.add_argument("--redis-url", help="overrides TIQU_REDIS_URL")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _command_index(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv):
        if arg in COMMANDS:
            return i
        if arg == "--redis-url":
            continue
    return None


def redis_failure(settings: Any, err: BaseException) -> str:
    """One line for a Redis failure: the URLs with passwords masked, the error's type and text.

    The text is scrubbed too: a password never reaches the terminal or a log.
    """
    from core.redis import mask_url

    urls = [] if settings is None else list(dict.fromkeys(
        [settings.redis_url, settings.backend_url]))
    text = f"{type(err).__name__}: {err}"
    for url in urls:
        text = text.replace(url, mask_url(url))
    where = " / ".join(mask_url(u) for u in urls) or "the configured URL"
    return f"Redis at {where} failed ({text})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _top_parser()
    index = _command_index(argv)
    if index is None:
        parser.print_help()
        return 0 if any(a in ("-h", "--help") for a in argv) or not argv else 2
    module = importlib.import_module(COMMANDS[argv[index]][0])
    sub = parser.add_subparsers(dest="command", required=True)
    module.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from redis import RedisError

    try:
        from kombu.exceptions import OperationalError
    except ImportError:  # a producer-only install has no kombu
        OperationalError = RedisError  # type: ignore[misc,assignment]

    from core.errors import TiquError
    from core.settings import Settings

    settings = None
    try:
        overrides = {"redis_url": args.redis_url} if args.redis_url else {}
        settings = Settings(**overrides)
        return int(args.func(args, settings) or 0)
    except TiquError as err:
        print(f"tiqu: error: {err}", file=sys.stderr)
        return 1
    except (RedisError, OperationalError) as err:
        print(f"tiqu: error: {redis_failure(settings, err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
