"""``tiqu study corrections``: what k corrections buy, through the retrain loop.

From a parent adapter (``make adapter``'s), for each k in ``--ks``: the first k
rows of the fresh set's correction pool (trainer.fresh; layouts the training
data never generates, split into pool and test before any scoring) become
corrections; a retrain (trainer.retrain, the review page's recipe) warm-starts
from the parent on them plus replayed synthetic rows; the child is scored on the
fresh test part. k = 0 is the parent itself. Each row of the table has field
exact and per-field exact on the fresh test part, the gate's synthetic test
scores of parent and child, and the retrain's wall time.

Every retrain is bounded by steps (``RETRAIN_CONFIG``), not time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from core.settings import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("study", help="measure what k corrections buy (retrain loop)")
    p.add_argument("what", choices=["corrections"])
    p.add_argument("--parent", type=Path, required=True, help="the parent run folder")
    p.add_argument("--data", type=Path, help="fresh rows, split into pool and test by "
                   "trainer.fresh.fresh_split (default: trainer/evalsets/fresh_v1.jsonl)")
    p.add_argument("--ks", default="0,25,50,100", help="numbers of corrections")
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and table")
    p.add_argument("--batch-size", type=int, default=16, help="eval batch size")
    p.set_defaults(func=run)


def _score(settings: Settings, adapter: Path, rows: list[Any], batch: int) -> dict[str, Any]:
    from inference.engine import Engine
    from trainer.evaluate import evaluate_engine, load_checked_adapter

    engine = Engine(settings.model_copy(update={"adapter": "none"}))
    load_checked_adapter(engine, adapter)
    report = evaluate_engine(engine, rows, "copy", batch, progress=True)
    overall = report["overall"]
    return {"field_exact": round(overall["field_exact"], 4),
            "per_field": {k: round(v, 4) for k, v in overall["exact"].items()},
            "n": overall["n"]}


def run(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.data import load_records, synth_records
    from trainer.fresh import FRESH_PATH, fresh_split
    from trainer.lora import TrainConfig, train
    from trainer.records import Record
    from trainer.retrain import REPLAY_ROWS, RETRAIN_CONFIG, Retrain

    data = args.data or FRESH_PATH
    split = fresh_split(load_records(data))
    pool, test = split["pool"], split["test"]
    ks = [int(k) for k in args.ks.split(",")]
    parent_version = json.loads((args.parent / "manifest.json").read_text())["version"]
    args.out.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, Any]] = []
    replay = synth_records(REPLAY_ROWS, seed=1, extended=True)
    for k in ks:
        if k > len(pool):
            raise SystemExit(f"k={k}: the pool has only {len(pool)} rows")
        row: dict[str, Any] = {"k": k}
        if k == 0:
            row["test"] = _score(settings, args.parent, test, args.batch_size)
        else:
            fixes = [Record(r.text, r.gold, ["correction", "study"]) for r in pool[:k]]
            retrain = Retrain(args.parent / "adapter", parent_version, fixes)
            out = args.out / f"k{k}"
            start = time.perf_counter()
            manifest = train(settings, replay, out, TrainConfig(**RETRAIN_CONFIG),
                             source=f"study k={k}", retrain=retrain)
            row["retrain_s"] = round(time.perf_counter() - start, 1)
            row["gate"] = manifest.gate  # type: ignore[attr-defined]
            row["steps"] = manifest.timings["steps"]
            row["test"] = _score(settings, out, test, args.batch_size)
        table.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        (args.out / "table.json").write_text(json.dumps(
            {"parent": parent_version, "data": str(data), "pool": len(pool),
             "test": len(test), "rows": table}, ensure_ascii=False, indent=1))
    print(format_table(table))
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the study."""
    lines = ["| k | field exact (fresh test) | name | address | email | question | "
             "synthetic test (parent → child) | retrain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["test"]
        f = t["per_field"]
        gate = r.get("gate")
        synth = (f"{gate['parent']['synthetic']:.1%} → {gate['new']['synthetic']:.1%}"
                 if gate else "-")
        took = f"{r['retrain_s'] / 60:.1f} min" if "retrain_s" in r else "-"
        lines.append(f"| {r['k']} | {t['field_exact']:.1%} | {f['name']:.1%} | "
                     f"{f['address']:.1%} | {f['email']:.1%} | {f['question']:.1%} | "
                     f"{synth} | {took} |")
    return "\n".join(lines)
