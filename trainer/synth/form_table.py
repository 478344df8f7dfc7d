"""The ``form_table`` layout: a ticket form as a table, ``key: value`` rows or a query string.
"""

from __future__ import annotations

from trainer import banks_extra
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


def form_text(x: Choices, d: Draft) -> str:
    """A ticket form or table: labelled rows, non-target fields among them."""
    rng = x.rng
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
    if style == "bracket":
        lines = [f"【{k}】{v}" for k, v in rows]
    elif style == "square":
        lines = [f"[{k}] {v}" for k, v in rows]
    elif style == "pipe":
        lines = [f"{k} | {v}" for k, v in rows]
    elif style == "markdown":
        head = rng.choice(("| 字段 | 内容 |", "| 项目 | 值 |", "| Field | Value |"))
        lines = [head, "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in rows]
    elif style == "colon":
        lines = [f"{k}{x.colon()}{v}" for k, v in rows]
    else:
        joiner = rng.choice(("\n", "\n", "&", "; "))
        lines = [joiner.join(f"{k}={v}" for k, v in rows)]
    if rng.random() < 0.6:
        lines.insert(0, x.punct(rng.choice(banks_extra.FORM_HEADERS)))
    d.tags += ["labelled", f"form_{style}"]
    return "\n".join(lines)
