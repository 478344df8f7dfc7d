"""Field confidence against correctness: calibration maps, risk-coverage, ECE, Brier.

Each scored field is a pair ``(confidence, exact)``. :func:`fit_isotonic` fits
a monotone map from raw confidence to P(exact) by pool-adjacent-violators and
returns it as breakpoints (:class:`core.manifest.CalibrationMap`).
:func:`confidence_report` measures how useful the scores are for review: the
precision left when only the most confident fields are kept, the coverage a
target precision allows, the expected calibration error and the Brier score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.manifest import MAX_BREAKPOINTS, CalibrationMap
from core.schema import FIELDS

ALL = "all"
COVERAGES = (0.5, 0.7, 0.9, 1.0)
PRECISIONS = (0.95, 0.98, 0.99)
ECE_BINS = 10
#: Fewest scored fields a calibration map is fit on; below it the raw score stays.
MIN_FIT_ROWS = 20

Pairs = Sequence[tuple[float, bool]]


def _arrays(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    conf = np.clip(np.array([p[0] for p in pairs], dtype=np.float64), 0.0, 1.0)
    return conf, np.array([float(p[1]) for p in pairs], dtype=np.float64)


def pav(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool adjacent violators over ``y`` (already in x order) with weights ``w``:
    per block, its mean, weight and the index of its first element."""
    means: list[float] = []
    weights: list[float] = []
    starts: list[int] = []
    for i, (v, wt) in enumerate(zip(y, w, strict=True)):
        means.append(float(v))
        weights.append(float(wt))
        starts.append(i)
        while len(means) > 1 and means[-2] > means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            weights[-2] = total
            del means[-1], weights[-1], starts[-1]
    return np.array(means), np.array(weights), np.array(starts)


def fit_isotonic(pairs: Pairs) -> CalibrationMap:
    """The isotonic (non-decreasing) map from confidence to P(exact), as breakpoints.

    Equal confidences are pooled first; each block of the fit becomes two
    breakpoints (its lowest and highest confidence) so the map is flat inside a
    block and linear between blocks. Thinned evenly to at most
    :data:`MAX_BREAKPOINTS`.
    """
    if not pairs:
        raise ValueError("no scored fields to fit a calibration map on")
    conf, hit = _arrays(pairs)
    xs, inverse = np.unique(conf, return_inverse=True)
    w = np.bincount(inverse).astype(np.float64)
    y = np.bincount(inverse, weights=hit) / w
    means, _weights, starts = pav(y, w)
    ends = np.append(starts[1:], len(xs)) - 1
    bx: list[float] = []
    by: list[float] = []
    for m, s, e in zip(means, starts, ends, strict=True):
        for x in dict.fromkeys((float(xs[s]), float(xs[e]))):
            bx.append(round(x, 6))
            by.append(round(min(1.0, max(0.0, float(m))), 6))
    return _thin(bx, by)


def _thin(bx: list[float], by: list[float]) -> CalibrationMap:
    keep = sorted({int(round(i)) for i in np.linspace(0, len(bx) - 1,
                                                      min(len(bx), MAX_BREAKPOINTS))})
    x, y = [bx[i] for i in keep], [by[i] for i in keep]
    dedup_x: list[float] = []
    dedup_y: list[float] = []
    for a, b in zip(x, y, strict=True):  # rounding may merge two breakpoints
        if dedup_x and a <= dedup_x[-1]:
            dedup_y[-1] = max(dedup_y[-1], b)
            continue
        dedup_x.append(a)
        dedup_y.append(b)
    return CalibrationMap(x=dedup_x, y=list(np.maximum.accumulate(dedup_y)))


def fit_fields(pairs: Mapping[str, Pairs], min_rows: int | None = None
               ) -> dict[str, CalibrationMap]:
    """One map per field with at least ``min_rows`` (default :data:`MIN_FIT_ROWS`)
    scored values."""
    least = MIN_FIT_ROWS if min_rows is None else min_rows
    return {f: fit_isotonic(p) for f, p in pairs.items() if len(p) >= least}


# --- measuring ----------------------------------------------------------------------


def precision_at(pairs: Pairs, coverage: float) -> float | None:
    """Share exact among the ``ceil(coverage * n)`` most confident fields."""
    conf, hit = _arrays(pairs)
    if not len(conf):
        return None
    k = max(1, math.ceil(coverage * len(conf) - 1e-9))
    order = np.argsort(-conf, kind="stable")
    return float(hit[order[:k]].mean())


def coverage_at(pairs: Pairs, precision: float) -> float:
    """The largest share of fields a confidence threshold keeps with at least
    ``precision`` of them exact (0.0 when no threshold does). A threshold keeps
    every field at or above it, so tied confidences are kept or dropped together."""
    conf, hit = _arrays(pairs)
    if not len(conf):
        return 0.0
    order = np.argsort(-conf, kind="stable")
    conf, hit = conf[order], hit[order]
    k = np.arange(1, len(conf) + 1)
    prec = np.cumsum(hit) / k
    cut = np.append(conf[1:] < conf[:-1], True)  # a threshold can stop only here
    ok = k[cut & (prec >= precision - 1e-12)]
    return float(ok.max() / len(conf)) if len(ok) else 0.0


def ece(pairs: Pairs, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error over ``bins`` equal-width confidence bins."""
    conf, hit = _arrays(pairs)
    if not len(conf):
        return None
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() / len(conf) * abs(hit[sel].mean() - conf[sel].mean())
    return float(total)


def brier(pairs: Pairs) -> float | None:
    """Mean squared difference of confidence and exactness (1 or 0)."""
    conf, hit = _arrays(pairs)
    return float(np.mean((conf - hit) ** 2)) if len(conf) else None


def curve(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and precision when keeping the k most confident, k = 1..n."""
    conf, hit = _arrays(pairs)
    order = np.argsort(-conf, kind="stable")
    k = np.arange(1, len(conf) + 1)
    return k / max(len(conf), 1), np.cumsum(hit[order]) / k


def summary(pairs: Pairs) -> dict[str, Any]:
    """Risk-coverage and calibration numbers of one group of scored fields."""
    return {
        "n": len(pairs),
        "exact": float(np.mean([p[1] for p in pairs])) if pairs else None,
        "precision_at_coverage": {f"{c:g}": precision_at(pairs, c) for c in COVERAGES},
        "coverage_at_precision": {f"{p:g}": coverage_at(pairs, p) for p in PRECISIONS},
        "ece": ece(pairs),
        "brier": brier(pairs),
    }


def confidence_report(pairs: Mapping[str, Pairs]) -> dict[str, dict[str, Any]]:
    """:func:`summary` per field and over all fields (``all``)."""
    every = [p for f in FIELDS for p in pairs.get(f, ())]
    return {**{f: summary(pairs.get(f, ())) for f in FIELDS}, ALL: summary(every)}


def format_confidence(report: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table: precision at each coverage, coverage at each precision,
    ECE and Brier, one line per field and one for all."""
    cols = ([f"P@{c:.0%}" for c in COVERAGES] + [f"C@{p:.0%}" for p in PRECISIONS]
            + ["ECE", "Brier"])
    head = f"{'field':<10}{'n':>6}" + "".join(f"{c:>8}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, s in report.items():
        cells = [*s["precision_at_coverage"].values(), *s["coverage_at_precision"].values()]
        cells = [f"{100 * v:5.1f}" if v is not None else "-" for v in cells]
        cells += [f"{v:.3f}" if v is not None else "-" for v in (s["ece"], s["brier"])]
        lines.append(f"{name:<10}{s['n']:>6}" + "".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)


def plot_risk_coverage(pairs: Mapping[str, Pairs], path: Path, title: str = "") -> Path:
    """A PNG of precision against coverage, one line per field and one for all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    every = [p for f in FIELDS for p in pairs.get(f, ())]
    for name, group in [*((f, pairs.get(f, ())) for f in FIELDS), (ALL, every)]:
        if group:
            cov, prec = curve(group)
            ax.plot(cov, prec, label=name, linewidth=2.0 if name == ALL else 1.0)
    ax.set_xlabel("coverage (most confident fields kept)")
    ax.set_ylabel("precision (exact)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or "risk-coverage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
