"""The demo scores itself on the bundled sample, whose rows carry gold labels."""

from __future__ import annotations

import json
from pathlib import Path

from core.schema import FIELDS
from tiqu.demo import SAMPLE, score


def test_the_bundled_sample_has_gold_copied_from_each_text() -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 20
    for row in rows:
        assert set(row["gold"]) == set(FIELDS)
        assert all(v is None or v in row["text"] for v in row["gold"].values()), row["id"]


def test_score_counts_exact_fields_and_mean_confidence(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()][:2]
    right = {"id": rows[0]["id"], "result": rows[0]["gold"],
             "confidence": dict.fromkeys(FIELDS, 0.9)}
    wrong = {"id": rows[1]["id"], "result": {**rows[1]["gold"], "name": None},
             "confidence": dict.fromkeys(FIELDS, 0.5)}
    error = {"id": "not-in-the-sample", "result": None}
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n"
                           for e in (right, wrong, error)), encoding="utf-8")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                      encoding="utf-8")
    table = score(inputs, out)
    assert table is not None
    assert table["name"] == {"exact": 0.5, "confidence": 0.7}
    assert table["email"]["exact"] == 1.0


def test_no_gold_no_score(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "result": {"name": null}}\n', encoding="utf-8")
    assert score(inputs, out) is None
