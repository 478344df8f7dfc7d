"""Tests for what the extended layouts put after the complaint (trainer.synth.after):
status rows, closings on lines of their own, contact sentences and pipe tables. None
of it is ever part of the question (no model, no torch)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from trainer import banks, banks_extra
from trainer.data import Record, record_problems
from trainer.synth import BOUNDARY_TAGS, EXTENDED_LAYOUTS, synth_records


def _half(s: str) -> str:
    return "".join(banks.HALF_WIDTH.get(c, c) for c in s)


def _both(strings: tuple[str, ...] | list[str]) -> list[str]:
    return sorted({*strings, *map(_half, strings)})


def _layout(r: Record) -> str:
    return next(t for t in EXTENDED_LAYOUTS if t in r.tags)


@pytest.fixture(scope="module")
def ext() -> list[Record]:
    """The extended-layout records among 1,000 at seed 1 (about 400)."""
    return [r for r in synth_records(1000, 1, extended=True)
            if any(t in r.tags for t in EXTENDED_LAYOUTS)]  # fmt: skip


_STATUS_LABELS = [label for zh, en in banks_extra.STATUS_ROWS.values() for label in (*zh, *en)]
#: "label：" and "label:" of every status row: never inside a question.
_STATUS_HEADS = tuple(f"{label}{c}" for label in _STATUS_LABELS for c in "：:")
_CLOSING_FIRST_LINES = _both([c.split("\n")[0] for c in (*banks_extra.CLOSING_LINES,
                              *banks_extra.CLOSING_LINES_EN, *banks_extra.CIZHI,
                              *banks_extra.SIGN_OFFS_EN)])  # fmt: skip
_NEVER_IN_QUESTION = ("此致", "敬礼", "顺祝安好", "regards", "Regards", "Many thanks,")
_PHONE = r"(?:\+86 )?\d[\d -]{6,14}\d"


def _contact_templates() -> list[tuple[str, str]]:
    """(field or "phone", template) of every contact sentence, full and half width."""
    out = [("phone", t) for t in _both(banks_extra.PHONE_AFTER + banks_extra.PHONE_AFTER_EN)]
    for bank in (banks_extra.CONTACT_AFTER, banks_extra.CONTACT_AFTER_EN):
        out += [(key, t) for key, group in bank.items() for t in _both(group)]
    return out


def _contact_regex(template: str, gold: dict[str, str | None]) -> re.Pattern[str] | None:
    """The sentence a template makes with the record's own golds and any phone; None
    when the template needs a field the record does not have."""
    parts = re.split(r"\{(\w+)\}", template)
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        elif part == "phone":
            pattern += _PHONE
        elif (value := gold[part]) is None:
            return None
        else:
            pattern += re.escape(value)
    return re.compile(pattern)


_CONTACT_PIECES = sorted({p for _, t in _contact_templates()
                          for p in re.split(r"\{\w+\}", t) if len(p.strip()) >= 4})  # fmt: skip


def _after(r: Record) -> str:
    """The text after the question span."""
    q = r.gold["question"] or ""
    return r.text[r.text.index(q) + len(q):]


# --- shares ---------------------------------------------------------------------------


def test_each_boundary_tag_has_a_modest_share(ext: list[Record]) -> None:
    assert 300 <= len(ext) <= 500
    counts = Counter(t for r in ext for t in r.tags)
    for tag in ("trailing_status", "closing_line", "contact_after"):
        assert 0.12 <= counts[tag] / len(ext) <= 0.4, (tag, counts[tag])
    forms = [r for r in ext if "form_table" in r.tags]
    assert 0.15 <= counts["pipe_table"] / len(forms) <= 0.5, counts["pipe_table"]
    # where each element lives
    for layout in EXTENDED_LAYOUTS:
        rows = [r for r in ext if layout in r.tags]
        assert sum("trailing_status" in r.tags for r in rows) >= 0.1 * len(rows), layout
    for layout in ("email_body", "narrative", "contact_last"):
        rows = [r for r in ext if layout in r.tags]
        for tag in ("closing_line", "contact_after"):
            assert sum(tag in r.tags for r in rows) >= 0.1 * len(rows), (layout, tag)
    assert {_layout(r) for r in ext if "pipe_table" in r.tags} == {"form_table"}
    assert not any(t in r.tags for r in synth_records(300, 1) for t in BOUNDARY_TAGS)


def test_generation_is_deterministic(ext: list[Record]) -> None:
    again = [r for r in synth_records(1000, 1, extended=True)
             if any(t in r.tags for t in EXTENDED_LAYOUTS)]  # fmt: skip
    assert again == ext
    other = synth_records(1000, 2, extended=True)
    assert [r.text for r in other if "contact_after" in r.tags] != [
        r.text for r in ext if "contact_after" in r.tags]


def test_gold_values_occur_verbatim(ext: list[Record]) -> None:
    for r in ext:
        assert record_problems(r) == [], r.text
        q = r.gold["question"] or ""
        for key in ("name", "address", "email"):
            value = r.gold[key]
            assert value is None or (value in r.text and value not in q), (key, r.text)


# --- status rows --------------------------------------------------------------------


def test_status_rows_come_after_the_complaint_never_in_it(ext: list[Record]) -> None:
    tagged = [r for r in ext if "trailing_status" in r.tags and r.gold["question"]]
    assert len(tagged) > 60
    for r in tagged:
        q = r.gold["question"] or ""
        assert not any(h in q for h in _STATUS_HEADS), q
        after = _after(r)
        if _layout(r) == "form_table":
            # the row right under the complaint's row (or next to it in a pipe table)
            near = after.split("\n", 2)[:2]
            labels = (*_STATUS_LABELS, *banks_extra.FORM_AFTER)
            assert any(label in "\n".join(near) for label in labels), r.text
        else:
            lines = [line.strip() for line in after.splitlines()]
            assert any(line.startswith(_STATUS_HEADS) for line in lines), r.text


# --- closing lines --------------------------------------------------------------------


def test_closing_lines_stand_alone_after_the_complaint(ext: list[Record]) -> None:
    tagged = [r for r in ext if "closing_line" in r.tags and r.gold["question"]]
    assert len(tagged) > 50
    for r in tagged:
        q = r.gold["question"] or ""
        assert not any(m in q for m in _NEVER_IN_QUESTION), q
        lines = [line.strip() for line in _after(r).splitlines()[1:]]
        assert any(line in _CLOSING_FIRST_LINES for line in lines), r.text


# --- contact sentences ----------------------------------------------------------------


def test_contact_sentence_follows_the_complaint_and_agrees_with_the_golds(
    ext: list[Record],
) -> None:
    tagged = [r for r in ext if "contact_after" in r.tags and r.gold["question"]]
    assert len(tagged) > 50
    kinds: Counter[str] = Counter()
    for r in tagged:
        q = r.gold["question"] or ""
        assert not any(p in q for p in _CONTACT_PIECES), q
        rest = _after(r).lstrip(" \n")
        hits = [key for key, t in _contact_templates()
                if (rx := _contact_regex(t, r.gold)) and rx.match(rest)]  # fmt: skip
        assert hits, r.text  # right after the question, with the record's own golds
        kinds[hits[0]] += 1
    assert kinds["phone"] > 10 and kinds["phone"] < sum(kinds.values()), kinds
    assert all(kinds[k] > 0 for k in ("name", "address", "email")), kinds


# --- pipe tables ----------------------------------------------------------------------


def test_pipe_table_question_is_the_cell_alone(ext: list[Record]) -> None:
    tagged = [r for r in ext if "pipe_table" in r.tags and r.gold["question"]]
    assert len(tagged) > 10
    labels = _both((*banks_extra.LABELS_ZH["question"], *banks_extra.LABELS_EN["question"]))
    for r in tagged:
        q = r.gold["question"] or ""
        assert "|" not in q and q == q.strip(), q
        lines = r.text.splitlines()
        at = next(i for i, line in enumerate(lines) if q in line)
        cells = [c.strip() for c in lines[at].strip("|").split("|")]
        assert q in cells and cells[cells.index(q) - 1] in labels, lines[at]
        # rows come after the complaint's row, or cells after its cell
        assert at < len(lines) - 1 or len(cells) > cells.index(q) + 1, r.text
        assert all(line.startswith("|") for line in lines[at:]), r.text
