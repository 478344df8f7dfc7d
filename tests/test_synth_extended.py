"""Tests for ``synth_records(..., extended=True)`` and its banks (no model, no torch)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_data import _parse
from trainer import banks, banks_extra
from trainer.data import Record, load_hard_eval, load_records, record_problems
from trainer.synth import EXTENDED_LAYOUTS, EXTENDED_TAGS, synth_records

#: sha256 of the default generator's output, computed before the extended layouts
#: existed: the default (and plain) path must stay byte-identical for every seed.
DEFAULT_50_SEED_3 = "925967201ed9ace490e6dd143c86380d820c55982d763c19db1d6964c05fb2a3"
PLAIN_100_SEED_5 = "faf83aa33b171149e0e0355a4c71ff2469b0597288df6eeccef3d2f1759f75af"


def _digest(records: list[Record]) -> str:
    rows = [[r.text, r.gold, r.tags] for r in records]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def _half(sentence: str) -> str:
    return "".join(banks.HALF_WIDTH.get(c, c) for c in sentence)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _strings(item)


def _bank_strings() -> list[str]:
    """Every string of every bank in trainer.banks_extra."""
    return [s for name, v in vars(banks_extra).items() if name.isupper() for s in _strings(v)]


def _is_new(r: Record) -> bool:
    return any(t in r.tags for t in EXTENDED_TAGS)


@pytest.fixture(scope="module")
def ext400() -> list[Record]:
    return synth_records(400, 1, extended=True)


# --- the default path -----------------------------------------------------------


def test_default_output_is_unchanged() -> None:
    assert _digest(synth_records(50, 3)) == DEFAULT_50_SEED_3
    assert _digest(synth_records(50, 3, extended=False)) == DEFAULT_50_SEED_3
    assert _digest(synth_records(100, 5, plain=True)) == PLAIN_100_SEED_5


def test_plain_and_extended_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude"):
        synth_records(5, 1, plain=True, extended=True)


# --- extended records -----------------------------------------------------------


def test_extended_is_deterministic_per_seed(ext400: list[Record]) -> None:
    first = synth_records(60, 4, extended=True)
    synth_records(10, 9, extended=True)  # another seed in between must not leak state
    assert synth_records(60, 4, extended=True) == first
    assert synth_records(60, 5, extended=True) != first
    assert synth_records(60, 4) != first
    assert synth_records(400, 1, extended=True) == ext400


def test_extended_records_are_valid_and_grounded(ext400: list[Record]) -> None:
    assert len(ext400) == 400
    for r in ext400:
        assert record_problems(r) == [], r.text
        assert len(set(r.tags)) == len(r.tags), r.tags
        question = r.gold["question"] or ""
        for key in ("name", "address", "email"):
            value = r.gold[key]
            assert value is None or (value in r.text and value not in question), (key, r.text)
        assert r.gold["email"] not in banks_extra.OTHER_EMAILS + banks.OTHER_EMAILS
        assert any(v is not None for v in r.gold.values())


def test_every_new_tag_occurs(ext400: list[Record]) -> None:
    counts = Counter(t for r in ext400 for t in r.tags)
    assert [t for t in EXTENDED_TAGS if counts[t] < 5] == [], counts
    for tag in ("english", "mixed_width", "stated_absent", "distractor_email",
                "distractor_phone", "distractor_order", "woven"):  # fmt: skip
        assert counts[tag] > 0, tag
    assert {f"topic:{t}" for t in banks_extra.COMPLAINTS} <= set(counts)


def test_about_40_percent_use_new_layouts(ext400: list[Record]) -> None:
    share = sum(map(_is_new, ext400)) / len(ext400)
    assert 0.25 <= share <= 0.55, share
    # each new record has exactly one layout; injection rides on one of them
    for r in filter(_is_new, ext400):
        assert sum(t in r.tags for t in EXTENDED_LAYOUTS) == 1, r.tags


def test_each_new_layout_has_null_and_stated_absent_fields(ext400: list[Record]) -> None:
    for layout in EXTENDED_LAYOUTS:
        rows = [r for r in ext400 if layout in r.tags]
        assert len(rows) >= 20, layout
        assert any(None in r.gold.values() for r in rows), layout
        assert any("stated_absent" in r.tags for r in rows), layout


def test_question_is_only_complaint_sentences(ext400: list[Record]) -> None:
    """The question span is a run of bank sentences (plus one injection, if any):
    no greeting, lead-in, closing, signature or distractor sentence leaks into it."""
    sentences = {s for g in banks_extra.COMPLAINTS.values() for s in g}
    sentences |= {s for g in banks.COMPLAINTS.values() for s in g}
    sentences |= {s for g in banks_extra.COMPLAINTS_EN.values() for s in g}
    variants = sentences | {_half(s) for s in sentences}
    injections = set(banks_extra.INJECTIONS)
    for r in filter(_is_new, ext400):
        rest, found = r.gold["question"], []
        if rest is None:
            continue
        while rest:
            head = next((s for s in variants | injections if rest.startswith(s)), None)
            assert head is not None, (rest, r.gold["question"])
            found.append(head)
            rest = rest[len(head) :].removeprefix(" ")
        n_injected = sum(s in injections for s in found)
        assert n_injected == ("injection" in r.tags), r.gold["question"]
        assert 1 <= len(found) - n_injected <= 3


def test_injections_never_change_the_gold(ext400: list[Record]) -> None:
    injected = [r for r in ext400 if "injection" in r.tags]
    assert injected
    for r in injected:
        assert r.gold["name"] not in ("管理员", "匿名", "测试用户", "Administrator")
        assert r.gold["email"] not in ("admin@demo.local", "test@test.invalid")


# --- banks ------------------------------------------------------------------------


def test_new_banks_have_enough_fresh_sentences() -> None:
    new = [s for g in banks_extra.COMPLAINTS.values() for s in g]
    assert len(new) >= 60 and len(set(new)) == len(new)
    old = {s for g in banks.COMPLAINTS.values() for s in g}
    assert old.isdisjoint(new)
    for topic in ("telecom", "power", "property", "ecommerce", "banking", "courier", "heating",
                  "water", "noise", "transport", "education", "healthcare"):  # fmt: skip
        assert len(banks_extra.COMPLAINTS[topic]) >= 5, topic
    assert all(s[-1] in "。！？" for s in new)
    assert all(s[-1] in ".!?" for g in banks_extra.COMPLAINTS_EN.values() for s in g)


def test_banks_share_nothing_with_the_hard_set() -> None:
    hard = load_hard_eval()
    texts = [r.text for r in hard]
    complaints = [s for g in banks_extra.COMPLAINTS.values() for s in g]
    complaints += [s for g in banks_extra.COMPLAINTS_EN.values() for s in g]
    complaints += [_half(s) for s in complaints]
    assert [s for s in complaints if any(s in t for t in texts)] == []
    # no fixed piece (between placeholders) of 8 characters or more of any bank either
    pieces = {p for s in _bank_strings() for p in re.split(r"\{\w*\}|\n", s) if len(p) >= 8}
    assert [p for p in sorted(pieces) if any(p in t for t in texts)] == []
    bank_text = _bank_strings()
    questions = {q for r in hard if (q := r.gold["question"])}
    assert [q for q in questions if any(q in s for s in bank_text)] == []
    hard_sentences = {s for q in questions for s in re.findall(r"[^。！？.!?]+[。！？.!?]", q)}
    assert [s for s in hard_sentences if len(s) >= 8 and any(s in b for b in bank_text)] == []


def test_extended_values_share_nothing_with_the_hard_set(ext400: list[Record]) -> None:
    hard = load_hard_eval()
    assert {r.text for r in ext400}.isdisjoint(r.text for r in hard)
    for key in ("name", "address", "email"):
        values = {r.gold[key] for r in ext400} - {None}
        assert values.isdisjoint(r.gold[key] for r in hard), key


def test_some_names_are_rare_and_none_is_a_hard_set_name() -> None:
    records = synth_records(3000, 1, extended=True, rare_names=True)  # the 60-minute run's
    names = [n for r in records if (n := r.gold["name"])]
    compound = [n for n in names if n[:2] in banks_extra.COMPOUND_SURNAMES]
    assert 0.03 < len(compound) / len(names) < 0.2
    assert {n for r in load_hard_eval() if (n := r.gold["name"])}.isdisjoint(names)
    plain_names = [r.gold["name"] for r in synth_records(3000, 1, extended=True)]
    assert not any(n and n[:2] in banks_extra.COMPOUND_SURNAMES for n in plain_names)
    with pytest.raises(ValueError, match="extended"):
        synth_records(3, 1, rare_names=True)


# --- CLI --------------------------------------------------------------------------


def test_cli_extended_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ext.jsonl"
    args = _parse("data", "synth", "--n", "40", "--seed", "2", "-o", str(out), "--format", "gold",
                  "--extended")  # fmt: skip
    assert args.extended and not args.plain
    assert args.func(args, None) == 0
    assert load_records(out) == synth_records(40, 2, extended=True)
    assert "40" in capsys.readouterr().out
    assert _parse("data", "synth", "-o", str(out)).extended is False
    with pytest.raises(SystemExit):
        _parse("data", "synth", "-o", str(out), "--plain", "--extended")
    assert "not allowed with" in capsys.readouterr().err
