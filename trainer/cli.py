"""``tiqu train`` and ``tiqu eval``.

``tiqu train`` runs :func:`trainer.lora.train` here, or with ``--submit`` sends the
same request as the ``tiqu.train`` task and follows its progress. Options left
out keep :class:`trainer.config.TrainConfig`'s defaults; the options are made
from its fields. ``tiqu eval`` scores the
base model, or an adapter, with the serving engine on a data file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from core.settings import Settings


def parse_layers(spec: str) -> list[int]:
    """``top4`` -> ``[-4, -3, -2, -1]``; ``20-23`` -> ``[20, 21, 22, 23]``; ``1,5`` -> both."""
    try:
        if spec.startswith("top"):
            n = int(spec[3:])
            return list(range(-n, 0)) if n > 0 else []
        out: list[int] = []
        for part in spec.split(","):
            lo, sep, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep and lo else [int(part)]
        return out
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"layers {spec!r}: use topN, A-B or a comma list, e.g. top4, 20-23, 1,5"
        ) from err


#: Options whose command-line form is not the field's own type.
_PARSERS: dict[str, Callable[[str], Any]] = {"layers": parse_layers}
#: Options that take one or more values; one value is passed as a string.
_MANY = ("target_modules", "report_to")


def _flag_kind(annotation: Any) -> tuple[Any, list[str] | None]:
    """``(type, choices)`` of one TrainConfig field: None dropped, Literal -> choices."""
    union = get_args(annotation) if get_origin(annotation) is not Literal else ()
    args = [a for a in union if a is not type(None)] or [annotation]
    if get_origin(args[0]) is Literal:
        return str, [str(v) for v in get_args(args[0])]
    return (args[0] if args[0] in (int, float) else str), None


def config_options(p: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field, its default shown from the model.

    A field ``max_steps`` is ``--max-steps``; a flag that is on by default is turned
    off with ``--no-<name>``. Options left out are not set, so the config's own
    defaults apply.
    """
    from trainer.config import TrainConfig

    for name, info in TrainConfig.model_fields.items():
        flag, default = name.replace("_", "-"), info.get_default(call_default_factory=True)
        text = f"{info.description} (default {default})"
        if info.annotation is bool:
            off = default is True
            p.add_argument(f"--no-{flag}" if off else f"--{flag}", dest=name, default=None,
                           action="store_const", const=not off, help=text)
        elif name in _MANY:
            p.add_argument(f"--{flag}", nargs="+", help=text)
        else:
            kind, choices = _flag_kind(info.annotation)
            p.add_argument(f"--{flag}", type=_PARSERS.get(name, kind), choices=choices, help=text)


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="fine-tune a LoRA adapter (locally or on the train queue)")
    p.add_argument("--data", required=True, action="append",
                   help="training data (seed, chat or gold rows); repeat to add files")
    p.add_argument("--out", type=Path, help="run folder (required unless --submit)")
    p.add_argument("--from-adapter", metavar="VERSION",
                   help="warm-start from this adapter (a run folder, a published version "
                        "or 'active'); rows tagged 'correction' are split into train and "
                        "gate parts and the manifest records the gate")
    p.add_argument("--correction-share", type=float, default=None,
                   help="with --from-adapter: share of training rows that are corrections "
                        "(repeated); default 0.5")
    p.add_argument("--promote-if-better", action="store_true",
                   help="with --from-adapter: publish the run, and promote it if it passes "
                        "the gate")
    config_options(p)
    p.add_argument("--submit", action="store_true", help="run as the tiqu.train task")
    p.add_argument("--inline", action="store_true", help="with --submit: send rows, not a path")
    p.add_argument("--timeout-s", type=float, default=24 * 3600, help="--submit: wait this long")
    p.set_defaults(func=run)


def _eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="score the base model or an adapter on a data file")
    p.add_argument("--data", type=Path, required=True, help="seed, chat or gold rows")
    p.add_argument("--adapter", type=Path, help="run folder or peft adapter folder; 'none' "
                   "scores the base model alone (default: what a worker serves)")
    p.add_argument("--decoding", choices=["copy", "schema", "none"], help="default: settings")
    p.add_argument("--limit", type=int, help="score only the first N rows")
    p.add_argument("--batch-size", type=int, help="default: TIQU_BATCH_SIZE")
    p.add_argument("--json", type=Path, help="also write the full report here")
    p.add_argument("--plot", type=Path, help="risk-coverage PNG (copy decoding); default: "
                   "risk_coverage.png next to --json")
    p.add_argument("--predictions", type=Path,
                   help="write each row's text, gold, prediction and wrong fields (JSONL)")
    p.add_argument("--min-tag-rows", type=int, default=5, help="hide tags with fewer rows")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the calibration maps on these rows (raw confidences) and write "
                        "them into the run folder's manifest (--adapter RUN_DIR)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def add_parser(sub: Any) -> None:
    """Register ``train`` and ``eval`` on the dispatcher's subparsers."""
    _train_parser(sub)
    _eval_parser(sub)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``tiqu train`` or ``tiqu eval``; 0 on success."""
    if args.command == "eval":
        return run_eval(args, settings)
    return run_train(args, settings)


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of the options given; the rest keep their defaults."""
    from trainer.config import TrainConfig

    values = {k: getattr(args, k) for k in TrainConfig.model_fields if getattr(args, k) is not None}
    for name in _MANY:
        if name in values and len(values[name]) == 1:
            values[name] = values[name][0]
    return TrainConfig.from_dict(values)


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    from core.errors import ConfigError

    config = train_config(args)
    if args.submit:
        return submit(args, settings, config)
    if args.out is None:
        raise ConfigError("--out is required unless --submit")
    from trainer.data import load_records
    from trainer.lora import train
    from trainer.retrain import Retrain, publish_and_gate, resolve_parent, split_rows

    # your own files, on your terminal: every reason shown
    records = [r for path in args.data for r in load_records(path)]
    retrain = None
    if args.from_adapter:
        records, corrections = split_rows(records)
        parent, version = resolve_parent(settings, args.from_adapter)
        retrain = Retrain(parent, version, corrections, **(
            {} if args.correction_share is None else {"share": args.correction_share}))
    elif args.promote_if_better or args.correction_share is not None:
        raise ConfigError("--promote-if-better and --correction-share need --from-adapter")
    manifest = train(settings, records, args.out, config, source=",".join(args.data),
                     retrain=retrain)
    print(f"adapter {manifest.version} written to {args.out}")
    if retrain is not None:
        gate = manifest.gate  # type: ignore[attr-defined]  # an extra manifest field
        print(("gate passed: " if gate["passed"] else "gate failed: ") + gate["reason"])
        if args.promote_if_better:
            print(json.dumps(publish_and_gate(settings, args.out, promote=True)))
    print(json.dumps({k: manifest.metrics.get(k) for k in
                      ("train_loss", "eval_loss", "valid_json", "field_exact", "grounded")}))
    print(json.dumps(manifest.timings))
    return 0


def load_quietly(path: str | Path) -> list[Any]:
    """The file's records for a queued run; a bad file's error names row numbers only,
    never texts or values, as the worker's would (``tiqu data check FILE`` shows why)."""
    from core.errors import DataError
    from trainer.data import load_records
    from trainer.tasks import row_numbers_only

    try:
        return load_records(path)
    except DataError as err:
        raise row_numbers_only(err) from None


def _request(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """The task payload. ``data`` and ``out`` go as absolute paths, which must lie below
    the worker's TIQU_TRAIN_DATA_DIR and TIQU_TRAIN_RUNS_DIR."""
    from core.errors import ConfigError
    from trainer.data import record_to_gold

    request: dict[str, Any] = {"config": config.to_dict()}
    if args.out is not None:
        request["out"] = str(args.out.resolve())
    if args.from_adapter:  # the worker fetches it from the registry: a version, not a path
        request["from_adapter"] = args.from_adapter
        request["promote_if_better"] = args.promote_if_better
        if args.correction_share is not None:
            request["correction_share"] = args.correction_share
    if args.inline:
        request["records"] = [record_to_gold(r) for p in args.data for r in load_quietly(p)]
        return request
    if len(args.data) > 1:
        raise ConfigError("--submit sends one --data path; with several files use --inline")
    path = Path(args.data[0])
    if path.exists():
        load_quietly(path)  # a bad file fails here, before it is sent
    request["data"] = str(path.resolve())
    return request


def submit(args: argparse.Namespace, settings: Settings, config: Any) -> int:
    """Send ``tiqu.train`` and print its progress until it finishes or times out."""
    from core.names import TRAIN_QUEUE, TRAIN_TASK
    from core.queue import make_celery, train_reprs
    from trainer.tasks import parse_request

    request = _request(args, config)
    parse_request(request)  # the worker would refuse it too; fail here, before sending
    app = make_celery(settings)
    # Flower and task events show argsrepr/kwargsrepr: the rows' count, not the rows.
    argsrepr, kwargsrepr = train_reprs([request], {})
    result = app.send_task(TRAIN_TASK, args=[request], queue=TRAIN_QUEUE,
                           argsrepr=argsrepr, kwargsrepr=kwargsrepr)
    print(f"submitted {TRAIN_TASK} {result.id} to queue {TRAIN_QUEUE}", file=sys.stderr)
    deadline, shown = time.monotonic() + args.timeout_s, None
    while not result.ready():
        if time.monotonic() > deadline:
            print(f"still running after {args.timeout_s:.0f} s: {result.id}", file=sys.stderr)
            return 1
        info = result.info if result.state == "PROGRESS" else None
        if info and info != shown:
            loss = "-" if info.get("loss") is None else f"{info['loss']:.4f}"
            print(f"{info.get('phase')}: step {info.get('step')}/{info.get('total')} "
                  f"loss {loss}", file=sys.stderr)
            shown = info
        time.sleep(1.0)
    if not result.successful():
        print(f"train task failed: {result.info}", file=sys.stderr)
        return 1
    done = result.get()
    print(json.dumps({"version": done["version"], "run_dir": done["run_dir"],
                      "metrics": done["metrics"]}, ensure_ascii=False))
    return 0


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from core.errors import ConfigError
    from inference.engine import Engine
    from inference.models import NO_ADAPTER, serving_adapter
    from trainer.calibrate import format_confidence, plot_risk_coverage
    from trainer.data import load_records
    from trainer.evaluate import evaluate_engine, format_table, load_checked_adapter

    records = load_records(args.data)[: args.limit]
    engine = Engine(settings.model_copy(update={"adapter": NO_ADAPTER}))
    # what a worker would serve: TIQU_ADAPTER, else the shipped adapter of the default model
    chosen = str(args.adapter) if args.adapter else serving_adapter(settings)
    adapter = None if chosen in (None, NO_ADAPTER) else Path(chosen)
    if adapter is not None:
        load_checked_adapter(engine, adapter)
    if args.calibrate:
        if adapter is None or not (adapter / "manifest.json").is_file():
            raise ConfigError("--calibrate writes into a run folder's manifest: give --adapter "
                              "RUN_DIR")
        engine.calibration = {}  # fit on the raw confidences
    mode = args.decoding or settings.decoding
    batch = args.batch_size or settings.batch_size
    rows: list[dict[str, Any]] | None = [] if args.predictions else None
    pairs: dict[str, list[tuple[float, bool]]] = {}
    report = evaluate_engine(engine, records, mode, batch, progress=not args.no_progress,
                             predictions=rows, pairs=pairs)
    report.update(data=str(args.data), base_model=settings.base_model,
                  adapter=str(adapter) if adapter else None)
    print(format_table(report, min_rows=args.min_tag_rows))
    plot = args.plot or (args.json.parent / "risk_coverage.png" if args.json else None)
    if "confidence" in report:
        print(format_confidence(report["confidence"]))
        print("confidence " + ("calibrated" if report["calibrated"] else "raw"))
        if plot is not None:
            report["risk_coverage_png"] = str(plot_risk_coverage(pairs, plot))
    print(f"{len(records)} rows, decoding {mode}, {report['eval_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    if args.predictions and rows is not None:
        args.predictions.parent.mkdir(parents=True, exist_ok=True)
        args.predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                            for r in rows))
    if args.calibrate and adapter is not None:
        from core.manifest import Manifest
        from trainer.calibrate import fit_fields

        manifest = Manifest.load(adapter)
        manifest.calibration = fit_fields(pairs)
        manifest.calibrated_on = {"data": Path(args.data).name,  # type: ignore[attr-defined]
                                  "rows": len(records)}
        manifest.save(adapter)
        print(f"calibration of {sorted(manifest.calibration)} fitted on {len(records)} rows, "
              f"written to {adapter / 'manifest.json'}")
    return 0
