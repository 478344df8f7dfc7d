"""The ``form_table`` layout: a ticket form as a table, ``key: value`` rows or a query string.
"""

from __future__ import annotations

from trainer import banks_extra
from trainer.synth.after import status_rows
from trainer.synth.common import draw_date, order_number
from trainer.synth.draft import CONTACT, NOISE_EMAILS, Choices, Draft, draw_phone


def _form_value(x: Choices, kind: str) -> str:
    rng = x.rng
    draw = {
        "ticket": lambda: order_number(rng),
        "time": lambda: draw_date(rng),
        "channel": lambda: rng.choice(banks_extra.CHANNELS),
        "priority": lambda: rng.choice(banks_extra.PRIORITIES),
        "phone": lambda: draw_phone(rng),
        "status": lambda: rng.choice(banks_extra.STATUSES),
        "agent": lambda: rng.choice(banks_extra.AGENTS),
        "cc": lambda: rng.choice(NOISE_EMAILS),
    }
    return draw[kind]()


_EXTRA_TAGS = {"ticket": "distractor_order", "phone": "distractor_phone", "cc": "distractor_email"}


#: Share of the forms drawn as a pipe table with two label-value pairs a row
#: (``pipe_table``), and of the other forms (key=value exports aside) with status rows
#: or rows for staff (``处理意见：``, ``备注：``) under the complaint's row.
_GRID_RATE, _AFTER_RATE = 0.3, 0.35


def _after_rows(x: Choices, d: Draft, skip: tuple[str, ...]) -> list[tuple[str, str]]:
    """Rows under the complaint's row: status rows, maybe a row left for staff."""
    rows = status_rows(x, d, skip)
    if x.rng.random() < 0.6:
        staff = (x.rng.choice(banks_extra.FORM_AFTER), x.rng.choice(banks_extra.FORM_AFTER_VALUES))
        rows.insert(x.rng.randint(0, len(rows)), staff)
    return rows


def _grid(x: Choices, rows: list[tuple[str, str]], question: int | None) -> list[str]:
    """A pipe table with two label-value pairs a row; the complaint's cell (row
    ``question``) has a row of its own, maybe with one more pair after it."""
    rng = x.rng
    pad = rng.choice((" ", " ", "", "  "))

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f"{pad}{c}{pad}" if c else pad * 2 or " " for c in cells) + "|"

    lines = []
    if rng.random() < 0.5:
        head = rng.choice((("项目", "内容"), ("字段", "值"), ("Field", "Value")))
        lines += [line([*head, *head]), "|" + "|".join(["---"] * 4) + "|"]
    pending: list[str] = []  # the first pair of a row
    i = 0
    while i < len(rows):
        if i != question:
            pending += rows[i]
            i += 1
            if len(pending) == 4:
                lines.append(line(pending))
                pending = []
            continue
        if pending:
            lines.append(line([*pending, "", ""]))
            pending = []
        cells = list(rows[i])
        i += 1
        if i < len(rows) and rng.random() < 0.4:  # "| 诉求内容 | … | 紧急程度 | 一般 |"
            cells += rows[i]
            i += 1
        elif rng.random() < 0.5:
            cells += ["", ""]
        lines.append(line(cells))
    if pending:
        lines.append(line([*pending, "", ""]))
    return lines


def form_text(x: Choices, d: Draft) -> str:
    """A ticket form or table: labelled rows, non-target fields among them, maybe
    status rows under the complaint's row."""
    rng = x.rng
    if rng.random() < _GRID_RATE:
        style = "grid"
    else:
        style = rng.choice(("bracket", "square", "pipe", "markdown", "colon", "kv"))
    kv = style == "kv"
    rows: list[tuple[str, str]] = []
    keys = list(CONTACT)
    if rng.random() < 0.25:
        rng.shuffle(keys)
        d.tags.append("shuffled")
    for key in [*keys, "question"]:
        value = d.values[key]
        label = rng.choice(banks_extra.KV_KEYS[key]) if kv else x.label(key)
        stated = key in d.stated or (key == "question" and value is None and rng.random() < 0.5)
        if value is None and stated:
            value = rng.choice(banks_extra.ABSENT_LABELLED)
            d.tags.append("stated_absent")
        if value is not None:
            rows.append((label, value))
    extras = rng.sample(sorted(banks_extra.FORM_EXTRAS), rng.randint(1, 4))
    extra_rows = []
    for kind in extras:
        labels, kv_key = banks_extra.FORM_EXTRAS[kind]
        label = kv_key if kv else rng.choice(labels)
        value = _form_value(x, kind)
        extra_rows.append((label, value))
        d.tags.append(_EXTRA_TAGS.get(kind, "form_extra"))
        d.noise.append(value)
    cut = rng.randint(0, len(extra_rows))
    rows = extra_rows[:cut] + rows + extra_rows[cut:]
    # the complaint's row (the last of the fields), when the form has one
    q_row = cut + len(rows) - len(extra_rows) - 1 if d.values["question"] else None
    if q_row is not None and (style == "grid" or (not kv and rng.random() < _AFTER_RATE)):
        rows[q_row + 1 : q_row + 1] = _after_rows(x, d, tuple(extras))
    if style == "grid":
        lines = _grid(x, rows, q_row)
        d.tags.append("pipe_table")
    elif style == "bracket":
        lines = [f"【{k}】{v}" for k, v in rows]
    elif style == "square":
        lines = [f"[{k}] {v}".rstrip() for k, v in rows]
    elif style == "pipe":
        lines = [f"{k} | {v}".rstrip() for k, v in rows]
    elif style == "markdown":
        head = rng.choice(("| 字段 | 内容 |", "| 项目 | 值 |", "| Field | Value |"))
        lines = [head, "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in rows]
    elif style == "colon":
        lines = [f"{k}{x.colon()}{v}".rstrip() for k, v in rows]
    else:
        joiner = rng.choice(("\n", "\n", "&", "; "))
        lines = [joiner.join(f"{k}={v}" for k, v in rows)]
    if rng.random() < 0.6:
        lines.insert(0, x.punct(rng.choice(banks_extra.FORM_HEADERS)))
    d.tags += ["labelled", f"form_{style}"]
    return "\n".join(lines)
