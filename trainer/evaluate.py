"""Scoring extractions against gold records: exact match, char F1, validity, grounding.

Predictions come from :class:`inference.engine.Engine`, the code the workers
run, so a score measures what serving will do. Every metric is reported over
all rows and per tag. Values are compared after :func:`core.validation.normalize`
(NFKC and collapsed whitespace); ``null`` against ``null`` is a match, and an
invalid prediction (``None``) matches nothing.

Two error counts per field show where a value was cut: ``cut_short`` (the
prediction is a strict part of the gold: a prefix, an inner part or a suffix)
and ``cut_at_quote`` (the gold holds a ``"`` and the prediction is the gold up
to just before one; such a row is also cut short). The tags in
:data:`FOCUS_TAGS` are reported on their own as well (``focus``).

With copy decoding every field also has a confidence (the one workers put in
envelopes, through the adapter's calibration map when it has one), and the
report's ``confidence`` section says how well it ranks and predicts exact
fields (trainer.calibrate): risk-coverage, ECE and Brier, per field and over
all. A row with no answer counts each field at confidence 0, not exact.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import IncompatibleAdapter
from core.manifest import ADAPTER_DIRNAME, Manifest
from core.schema import FIELDS, Complaint
from core.validation import normalize
from core.validation import same_field as same
from trainer.data import Record

ALL = "all"
#: Tags of the hard set reported first: long questions, and values with quotes.
FOCUS_TAGS = ("multi_sentence", "quotes")


def char_f1(pred: str | None, gold: str | None) -> float:
    """Character-multiset F1 of two normalised values; 1.0 for null/null, 0.0 for one null."""
    if pred is None or gold is None:
        return float(pred is None and gold is None)
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def cut_short(pred: str | None, gold: str | None) -> bool:
    """The prediction is a non-empty strict part of the gold (after normalisation)."""
    if not pred or not gold:
        return False
    p, g = normalize(pred), normalize(gold)
    return bool(p) and p != g and p in g


def cut_at_quote(pred: str | None, gold: str | None) -> bool:
    """The gold holds a ``"`` and the prediction is the gold up to just before one."""
    if not pred or not gold or '"' not in gold:
        return False
    p, g = normalize(pred), normalize(gold)
    return any(g[:i].rstrip() == p for i, c in enumerate(g) if c == '"' and i > 0)


@dataclass
class Tally:
    """Running sums for one group of rows (all rows, or the rows of one tag)."""

    n: int = 0
    valid: int = 0
    rows_exact: int = 0
    exact: Counter[str] = field(default_factory=Counter)
    f1: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0.0))
    values: int = 0
    grounded: int = 0
    cut: Counter[str] = field(default_factory=Counter)
    cut_quote: Counter[str] = field(default_factory=Counter)

    def add(self, pred: Complaint | None, record: Record) -> None:
        self.n += 1
        if pred is None:
            return
        self.valid += 1
        hits = 0
        for key in FIELDS:
            value, gold = getattr(pred, key), record.gold[key]
            hit = same(value, gold)
            hits += hit
            self.exact[key] += hit
            self.f1[key] += char_f1(value, gold)
            self.cut[key] += cut_short(value, gold)
            self.cut_quote[key] += cut_at_quote(value, gold)
            if value is not None:
                self.values += 1
                self.grounded += bool(value) and value in record.text
        self.rows_exact += hits == len(FIELDS)

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        exact = {k: self.exact[k] / n for k in FIELDS}
        f1 = {k: self.f1[k] / n for k in FIELDS}
        return {
            "n": self.n,
            "valid_json": self.valid / n,
            "field_exact": sum(exact.values()) / len(FIELDS),
            "row_exact": self.rows_exact / n,
            "char_f1": sum(f1.values()) / len(FIELDS),
            "grounded": self.grounded / self.values if self.values else None,
            "exact": exact,
            "f1": f1,
            "cut_short": {k: self.cut[k] for k in FIELDS},
            "cut_at_quote": {k: self.cut_quote[k] for k in FIELDS},
        }


def score(preds: Sequence[Complaint | None], records: Sequence[Record]) -> dict[str, Any]:
    """Metrics over all rows (``overall``) and per tag (``tags``)."""
    if len(preds) != len(records):
        raise ValueError(f"predictions ({len(preds)}) != records ({len(records)})")
    tallies: dict[str, Tally] = {ALL: Tally()}
    for pred, record in zip(preds, records, strict=True):
        for group in (ALL, *record.tags):
            tallies.setdefault(group, Tally()).add(pred, record)
    tags = {tag: t.summary() for tag, t in sorted(tallies.items()) if tag != ALL}
    return {
        "overall": tallies[ALL].summary(),
        "focus": {tag: tags[tag] for tag in FOCUS_TAGS if tag in tags},
        "tags": tags,
    }


def predict(
    engine: Any, texts: Sequence[str], mode: str, batch_size: int, progress: bool = True,
    confidence: list[dict[str, float]] | None = None,
) -> list[Complaint | None]:
    """One prediction per text (``None`` when invalid), batch by batch, with a progress bar.

    ``confidence``, when given, receives per text its fields' confidence as
    workers report it (empty outside copy decoding).
    """
    from tqdm import tqdm

    from inference.engine import field_scores

    calibration = getattr(engine, "calibration", None)
    out: list[Complaint | None] = []
    with tqdm(total=len(texts), unit="row", desc=f"eval ({mode})", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            outcomes = engine.extract_batch(chunk, mode)
            out += [o.complaint for o in outcomes]
            if confidence is not None:
                confidence += [field_scores(o, calibration).confidence for o in outcomes]
            bar.update(len(chunk))
    return out


def scored_fields(preds: Sequence[Complaint | None], confidence: Sequence[dict[str, float]],
                  records: Sequence[Record]) -> dict[str, list[tuple[float, bool]]]:
    """Per field, ``(confidence, exact)`` of every row; empty when no row has a
    confidence (not copy decoding)."""
    if not any(confidence):
        return {}
    pairs: dict[str, list[tuple[float, bool]]] = {f: [] for f in FIELDS}
    for pred, conf, record in zip(preds, confidence, records, strict=True):
        for f in FIELDS:
            hit = pred is not None and same(getattr(pred, f), record.gold[f])
            pairs[f].append((float(conf.get(f, 0.0)), hit))
    return pairs


def evaluate_engine(
    engine: Any, records: Sequence[Record], mode: str, batch_size: int, progress: bool = True,
    predictions: list[dict[str, Any]] | None = None,
    pairs: dict[str, list[tuple[float, bool]]] | None = None,
) -> dict[str, Any]:
    """Run the engine over ``records`` and score it; adds mode, timing and adapter version.

    ``predictions``, when given, receives one row per record: text, tags, gold,
    prediction, confidence and the fields it got wrong (after normalisation).
    ``pairs``, when given, receives per field ``(confidence, exact)`` of every
    row (copy decoding only), as the ``confidence`` section measures them.
    """
    from trainer.calibrate import confidence_report

    start = time.perf_counter()
    conf: list[dict[str, float]] = []
    preds = predict(engine, [r.text for r in records], mode, batch_size, progress, conf)
    elapsed_s = time.perf_counter() - start
    report = score(preds, records)
    scored = scored_fields(preds, conf, records)
    if scored:
        report["confidence"] = confidence_report(scored)
    if pairs is not None:
        pairs.update(scored)
    if predictions is not None:
        predictions.extend(prediction_row(r, p, c)
                           for r, p, c in zip(records, preds, conf, strict=True))
    report.update(
        calibrated=bool(getattr(engine, "calibration", None)),
        decoding=mode,
        adapter_version=getattr(engine, "adapter_version", None),
        eval_s=round(elapsed_s, 2),
        rows_per_s=round(len(records) / elapsed_s, 3) if elapsed_s > 0 else None,
    )
    return report


def prediction_row(record: Record, pred: Complaint | None,
                   confidence: dict[str, float] | None = None) -> dict[str, Any]:
    """One record's gold, prediction and confidence, for reading errors."""
    got = pred.model_dump() if pred is not None else None
    wrong = list(FIELDS) if got is None else [
        k for k in FIELDS if not same(got[k], record.gold[k])]
    return {"text": record.text, "tags": list(record.tags), "gold": dict(record.gold),
            "pred": got, "confidence": confidence or {}, "wrong": wrong}


def evaluate_model(settings: Any, model: Any, tok: Any, records: Sequence[Record], mode: str,
                   batch_size: int, version: str | None = None, progress: bool = True,
                   pairs: dict[str, list[tuple[float, bool]]] | None = None,
                   ) -> dict[str, Any]:
    """Score an in-memory model (e.g. one just trained) through the serving engine;
    its confidences are raw (no calibration map). ``pairs``: see :func:`evaluate_engine`."""
    from inference.engine import Engine
    from inference.models import NO_ADAPTER

    model.eval()
    tok.padding_side = "left"  # generation pads on the left, as the engine's loader does
    engine = Engine(settings.model_copy(update={"adapter": NO_ADAPTER}), model=model, tokenizer=tok)
    engine.adapter_version = version
    return evaluate_engine(engine, records, mode, batch_size, progress, pairs=pairs)


def adapter_folder(path: Path) -> Path:
    """The peft folder of a run folder (``DIR/adapter``) or of an adapter folder itself."""
    inner = path / ADAPTER_DIRNAME
    return inner if (inner / "adapter_config.json").exists() else path


def load_checked_adapter(engine: Any, path: Path) -> str:
    """Load an adapter into ``engine`` after checking its manifest, if it has one.

    Raises :class:`IncompatibleAdapter` when the manifest's prompt version,
    schema version or base model hash differs from the engine's. Returns the
    version the adapter was loaded under.
    """
    from core.prompting import PROMPT_VERSION
    from core.schema import SCHEMA_VERSION

    folder = adapter_folder(path)
    run = folder.parent if folder != path else path
    if not (run / "manifest.json").exists():
        engine.load_adapter(str(folder), version="local", calibration={})
        return "local"
    manifest = Manifest.load(run)
    checks = (
        ("prompt version", manifest.prompt_version, PROMPT_VERSION),
        ("schema version", manifest.schema_version, SCHEMA_VERSION),
        ("base model hash", manifest.base_model_hash, engine.base_hash),
    )
    for what, theirs, ours in checks:
        if theirs != ours:
            raise IncompatibleAdapter(f"adapter {what} {theirs!r} != engine {what} {ours!r}")
    engine.load_adapter(str(folder), version=manifest.version,
                        calibration=manifest.calibration)
    return manifest.version


def _pct(x: float | None) -> str:
    return "   -" if x is None else f"{100 * x:5.1f}"


def format_table(report: dict[str, Any], min_rows: int = 1) -> str:
    """A fixed-width table: one line for all rows, one per focus tag, then one per tag
    with >= min_rows rows; then the cut-short and cut-at-quote counts per field."""
    cols = ["n", "valid", "field", *FIELDS, "row", "f1", "ground", "q_f1", "cut", "cut@quot"]
    head = f"{'group':<22}" + "".join(f"{c[:8]:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    focus = report.get("focus", {})
    groups = [(ALL, report["overall"]), *focus.items()]
    groups += [(t, s) for t, s in report["tags"].items() if s["n"] >= min_rows and t not in focus]
    for name, s in groups:
        cells = [f"{s['n']:>5}", _pct(s["valid_json"]), _pct(s["field_exact"])]
        cells += [_pct(s["exact"][k]) for k in FIELDS]
        cells += [_pct(s["row_exact"]), _pct(s["char_f1"]), _pct(s["grounded"])]
        cells += [_pct(s["f1"]["question"]), str(sum(s["cut_short"].values())),
                  str(sum(s["cut_at_quote"].values()))]
        lines.append(f"{name[:22]:<22}" + "".join(f"{c:>9}" for c in cells))
    overall = report["overall"]
    for what in ("cut_short", "cut_at_quote"):
        counts = "  ".join(f"{k} {overall[what][k]}" for k in FIELDS)
        lines.append(f"{what} (all rows): {counts}")
    return "\n".join(lines)
