"""``tiqu data``: make synthetic data, check a data file, convert between formats,
export the stored corrections, write the fresh-layout tickets.

Every subcommand validates all rows first; on a bad file it prints every bad row
to stderr, writes nothing and returns 1.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FORMATS = ("seed", "chat", "gold")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _share(value: str) -> float:
    x = float(value)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {x}")
    return x


def add_parser(sub: Any) -> None:
    """Register ``data`` and its subcommands on the dispatcher's subparsers."""
    p = sub.add_parser("data", help="make, check and convert training data")
    cmds = p.add_subparsers(dest="data_command", required=True,
                            metavar="{synth,check,convert,corrections,fresh}")
    synth = cmds.add_parser("synth", help="write N synthetic complaints")
    synth.add_argument("--n", type=_positive, default=1000, help="number of rows")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same rows)")
    synth.add_argument("-o", "--output", type=Path, required=True, help="output file")
    synth.add_argument("--format", choices=FORMATS, default="seed")
    layouts = synth.add_mutually_exclusive_group()
    layouts.add_argument("--plain", action="store_true", help="one layout only, nothing missing, "
                         "no distractors (the seed tutorial's kind of text; a baseline)")
    layouts.add_argument("--extended", action="store_true", help="about 40%% of the rows in "
                         "e-mail, narrative, contact-last, ticket-form and injection layouts")
    synth.add_argument("--rare-names", action="store_true", help="with --extended: a third "
                       "of the extended Chinese texts use compound or rare family names")
    synth.add_argument("--unlabelled", type=_share, metavar="SHARE", help="share of the "
                       "default-layout texts with no field labels (default: a quarter)")
    check = cmds.add_parser("check", help="validate a data file; print counts per split and tag")
    check.add_argument("file", type=Path)
    convert = cmds.add_parser("convert", help="convert a data file to another format")
    convert.add_argument("input", type=Path)
    convert.add_argument("-o", "--output", type=Path, required=True, help="output file")
    convert.add_argument("--format", choices=FORMATS, default="seed")
    corrections = cmds.add_parser("corrections", help="export the stored corrections "
                                  "(latest per id and text) as gold-format JSONL")
    corrections.add_argument("-o", "--output", type=Path, required=True, help="output file")
    fresh = cmds.add_parser("fresh", help="write the fresh-layout tickets (chat, call notes, "
                            "OCR'd forms, mixed Chinese/English) as gold-format JSONL, each "
                            "row tagged with its part (pool or test)")
    fresh.add_argument("-o", "--output", type=Path, required=True, help="output file")
    fresh.add_argument("--n", type=_positive, default=320, help="number of rows (default: "
                       "320, the stored trainer/evalsets/fresh_v1.jsonl)")
    fresh.add_argument("--seed", type=int, default=2026, help="random seed (same seed, same rows)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Any = None) -> int:
    """Run one ``tiqu data`` subcommand; 0 on success, 1 on bad data."""
    from core.errors import DataError

    if args.data_command == "corrections":
        return _corrections(args, settings)
    handlers = {"synth": _synth, "check": _check, "convert": _convert, "fresh": _fresh}
    try:
        return handlers[args.data_command](args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _synth(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from trainer.data import data_hash, save_records
    from trainer.synth import SynthConfig, generate

    try:
        config = SynthConfig(seed=args.seed, plain=args.plain, extended=args.extended,
                             rare_names=args.rare_names, unlabelled=args.unlabelled)
    except ValidationError as err:
        for problem in err.errors():
            print(f"error: {problem['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    records = generate(args.n, config)
    save_records(records, args.output, fmt=args.format)
    print(
        f"wrote {len(records)} {args.format} rows to {args.output} "
        f"(seed {args.seed}, data hash {data_hash(records)[:12]})"
    )
    return 0


def _fresh(args: argparse.Namespace) -> int:
    from trainer.data import data_hash, save_records
    from trainer.fresh import fresh_split, generate_fresh

    records = generate_fresh(args.n, args.seed)
    save_records(records, args.output, fmt="gold")
    parts = ", ".join(f"{k} {len(v)}" for k, v in fresh_split(records).items())
    print(f"wrote {len(records)} gold rows to {args.output} ({parts}; seed {args.seed}, "
          f"data hash {data_hash(records)[:12]})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from core.schema import FIELDS
    from trainer.data import SPLITS, data_hash, load_records, split_records

    records = load_records(args.file)
    splits = split_records(records)
    nulls = {k: sum(r.gold[k] is None for r in records) for k in FIELDS}
    tags = Counter(t for r in records for t in r.tags)
    print(f"{args.file}: {len(records)} valid rows, data hash {data_hash(records)[:12]}")
    print("splits: " + ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
    print("null fields: " + ", ".join(f"{k} {n}" for k, n in nulls.items()))
    listing = ", ".join(f"{t} {n}" for t, n in sorted(tags.items()))
    print("tags: " + (listing or "none (only the gold format keeps tags)"))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from trainer.data import load_records, save_records

    records = load_records(args.input)
    save_records(records, args.output, fmt=args.format)
    print(f"converted {len(records)} rows from {args.input} to {args.output} ({args.format})")
    return 0


def _corrections(args: argparse.Namespace, settings: Any) -> int:
    import json
    import os

    from core import corrections
    from core.redis import client_from_url

    found = corrections.load(client_from_url(settings.backend_url, settings))
    tmp = args.output.with_name(args.output.name + ".tmp")
    # Owner-only: the rows hold complaint texts (personal data).
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
              encoding="utf-8") as fh:
        for c in found:
            fh.write(json.dumps(c.row(), ensure_ascii=False) + "\n")
    tmp.replace(args.output)  # a reader never sees half a file
    print(f"exported {len(found)} correction(s) to {args.output}")
    return 0
