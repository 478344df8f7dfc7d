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

from tests.test_data import _parse, question_parts
from trainer import banks, banks_extra
from trainer.data import (
    Record,
    load_hard_eval,
    load_records,
    record_problems,
    save_records,
)
from trainer.evalsets import make_hard
from trainer.synth import EXTENDED_LAYOUTS, EXTENDED_TAGS, MAX_SENTENCES, synth_records

#: sha256 of the generator's output since questions became whole complaints (problem,
#: history, request, closing; labels, subject lines and quotes around and inside them),
#: and for the extended layouts since they put status rows, closing lines, contact
#: sentences and pipe-table cells after the complaint (trainer.synth.after).
#: The output must stay byte-identical for every seed: change these only when the
#: generator changes on purpose, and say so in docs/training.md.
DEFAULT_50_SEED_3 = "b6b0c3714c833408e71e51c80a832fb3c260e3f31e57c4a46d27f911a0126ab3"
PLAIN_100_SEED_5 = "726cf0ad2c27a6e9b22b18180d567307e4f13923b79c7af3c406b4f5a801c9ee"
EXTENDED_50_SEED_3 = "5b24d1880766a83ace4b01567d1daefb5f34d0b320e77cfcaaf6389f33afc827"
RARE_50_SEED_3 = "a607427187d179fd7d0ec15af24e0f0fbf7c8741d9924edbdd0f4899582dcc19"


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


def test_output_hashes_are_stored() -> None:
    assert _digest(synth_records(50, 3)) == DEFAULT_50_SEED_3
    assert _digest(synth_records(50, 3, extended=False)) == DEFAULT_50_SEED_3
    assert _digest(synth_records(100, 5, plain=True)) == PLAIN_100_SEED_5
    assert _digest(synth_records(50, 3, extended=True)) == EXTENDED_50_SEED_3
    assert _digest(synth_records(50, 3, extended=True, rare_names=True)) == RARE_50_SEED_3


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


def test_question_is_the_whole_complaint(ext400: list[Record]) -> None:
    """The question span is the problem (from the complaint banks), then history, a
    request and a closing (plus one injection, if any): 2 to 6 sentences. No greeting,
    lead-in, section label, signature or line of its own with a number leaks into it."""
    problems = {s for g in banks_extra.COMPLAINTS.values() for s in g}
    problems |= {s for g in banks.COMPLAINTS.values() for s in g}
    problems |= {s for g in banks_extra.COMPLAINTS_EN.values() for s in g}
    for r in filter(_is_new, ext400):
        if r.gold["question"] is None:
            continue
        kinds = question_parts(r.gold["question"], problems)
        n_injected = kinds.count("injection")
        assert n_injected == ("injection" in r.tags), r.gold["question"]
        assert 2 <= len(kinds) - n_injected <= MAX_SENTENCES, kinds
        assert "problem" in [k for k in kinds if k != "injection"][:2], kinds


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


def _hard_rows() -> list[Record]:
    """The rows of hard_v1 and of hard_v2 (whose first rows are hard_v1's)."""
    return load_records(make_hard.OUT_V2)


def test_banks_share_nothing_with_the_hard_set() -> None:
    """No bank (the question banks for history, requests, closings and quotes
    included) shares a sentence or a fixed piece of 8+ characters with hard_v1/v2."""
    hard = _hard_rows()
    texts = [r.text for r in hard]
    complaints = [s for g in banks_extra.COMPLAINTS.values() for s in g]
    complaints += [s for g in banks_extra.COMPLAINTS_EN.values() for s in g]
    complaints += list(banks_extra.REQUESTS + banks_extra.REQUESTS_EN)
    complaints += [s for s in banks_extra.QUESTION_CLOSINGS if len(s) >= 4]
    complaints += [_half(s) for s in complaints]
    assert [s for s in complaints if any(s in t for t in texts)] == []
    brands = [b.strip('"') for b in banks_extra.QUOTE_BRANDS]
    assert [b for b in brands if any(b in t for t in texts)] == []
    # no fixed piece (between placeholders) of 8 characters or more of any bank either
    pieces = {p for s in _bank_strings() for p in re.split(r"\{\w*\}|\n", s) if len(p) >= 8}
    assert [p for p in sorted(pieces) if any(p in t for t in texts)] == []
    bank_text = _bank_strings()
    questions = {q for r in hard if (q := r.gold["question"])}
    assert [q for q in questions if any(q in s for s in bank_text)] == []
    hard_sentences = {s for q in questions for s in re.findall(r"[^。！？.!?]+[。！？.!?]", q)}
    assert [s for s in hard_sentences if len(s) >= 8 and any(s in b for b in bank_text)] == []


def test_extended_values_share_nothing_with_the_hard_set(ext400: list[Record]) -> None:
    hard = _hard_rows()
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
    # Faker makes a compound family name (欧阳) now and then, but only rarely
    plain_compound = [n for n in plain_names if n and n[:2] in banks_extra.COMPOUND_SURNAMES]
    assert len(plain_compound) / len(plain_names) < 0.005 < len(compound) / len(names)
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


# --- question boundaries, quotes and escapes ---------------------------------------

_SUBJECT_HEADS = tuple(line.split("{", 1)[0] for line in banks_extra.SUBJECT_LINES)
_QUESTION_LABELS = (*banks.QUESTION_LABELS, *banks_extra.SECTION_LABELS,
                    *banks_extra.LABELS_ZH["question"], *banks_extra.LEADS)  # fmt: skip


@pytest.fixture(scope="module")
def mixed() -> list[Record]:
    return synth_records(1500, 12) + synth_records(800, 12, extended=True)


def test_labels_and_subject_lines_stay_outside_the_question(mixed: list[Record]) -> None:
    labelled = subjects = 0
    for r in mixed:
        q = r.gold["question"]
        if q is None:
            continue
        assert not q.startswith(_QUESTION_LABELS), q
        assert not any(h in q for h in _SUBJECT_HEADS), q
        for line in r.text.splitlines():
            if line.startswith(_SUBJECT_HEADS) and "subject" in r.tags:
                subjects += 1
                assert q not in line or line.index(q) > line.index(" ") > 0, r.text
        if "question_label" in r.tags:
            labelled += 1
            before = r.text[: r.text.index(q)].rstrip(" ")
            assert before.endswith((":", "：")), r.text
    assert labelled > 50 and subjects > 50, (labelled, subjects)


def test_questions_are_two_to_six_sentences_and_often_more_than_two(
    mixed: list[Record],
) -> None:
    counts = [make_hard.sentences(q) for r in mixed if (q := r.gold["question"])
              and "injection" not in r.tags and "english" not in r.tags]  # fmt: skip
    assert min(counts) >= 2 and max(counts) <= MAX_SENTENCES + 1  # "辛苦了，谢谢。" and the like
    assert sum(c >= 3 for c in counts) / len(counts) > 0.4
    assert sum(c >= 5 for c in counts) > 20


def test_some_values_hold_quotes_backslashes_tabs_and_line_breaks(
    mixed: list[Record], tmp_path: Path
) -> None:
    questions = [q for r in mixed if (q := r.gold["question"])]
    for needle, least in (('"', 60), ("\\", 25), ("\t", 25), ("\n", 25)):
        assert sum(needle in q for q in questions) >= least, needle
    quoted = [r for r in mixed if "quotes" in r.tags]
    assert all('"' in (r.gold["question"] or "") or "\\" in (r.gold["question"] or "")
               for r in quoted)  # fmt: skip
    assert any('"' in r.gold["question"][:-1] for r in quoted if r.gold["question"])
    for fmt in ("gold", "seed", "chat"):
        path = save_records(quoted, tmp_path / f"q.{fmt}.jsonl", fmt=fmt)
        back = load_records(path)
        assert [(r.text, r.gold) for r in back] == [(r.text, r.gold) for r in quoted], fmt
    for r in quoted:
        assert json.loads(json.dumps(r.gold, ensure_ascii=False)) == r.gold
        assert record_problems(r) == []


def test_closing_glued_to_the_complaint_is_part_of_the_question(mixed: list[Record]) -> None:
    closings = (*banks.CLOSINGS, *map(_half, banks.CLOSINGS), *banks_extra.STORY_CLOSINGS)
    own = (*banks_extra.QUESTION_CLOSINGS, *map(_half, banks_extra.QUESTION_CLOSINGS))
    glued = 0
    for r in mixed:
        q = r.gold["question"]
        if not q:
            continue
        end = r.text.index(q) + len(q)
        after = r.text[end:]
        # a closing right after the question's last stop, on the same line, belongs to it
        assert not after.startswith(closings), r.text
        glued += q.endswith(closings)
        # a closing on a line of its own is a sign-off: never inside the question
        assert not q.endswith(tuple(b + c for b in "\n\t" for c in closings + own)), q
    assert glued > 50
