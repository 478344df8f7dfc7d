"""What real tickets put after the complaint: status and metadata rows, closings on
lines of their own and contact sentences. None of it is ever part of the question;
each layout decides how often and where (banks in trainer.banks_extra).
"""

from __future__ import annotations

from trainer import banks_extra
from trainer.synth.common import draw_date, order_number
from trainer.synth.draft import CONTACT, Choices, Draft, draw_phone, join_sentences

#: The tags of these elements, one per kind, on every record that has one.
AFTER_TAGS = ("trailing_status", "closing_line", "contact_after")

_THANKS = ("谢谢", "感谢", "多谢", "Thank")


def _status_value(x: Choices, kind: str) -> str:
    rng = x.rng
    draw = {
        "channel": lambda: rng.choice(banks_extra.CHANNELS),
        "status": lambda: rng.choice(banks_extra.STATUSES),
        "priority": lambda: rng.choice((*banks_extra.PRIORITIES, "一般")),
        "time": lambda: draw_date(rng),
        "ticket": lambda: order_number(rng),
        "agent": lambda: rng.choice(banks_extra.AGENTS),
        "category": lambda: rng.choice(banks_extra.CATEGORIES),
        "reply": lambda: rng.choice(banks_extra.REPLY_WAYS),
    }
    return draw[kind]()


def status_rows(x: Choices, d: Draft, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """One to three ``(label, value)`` rows of ticket metadata (``受理渠道``/``热线``,
    ``Status``/``open``), none of the kinds in ``skip``."""
    rng = x.rng
    kinds = [k for k in sorted(banks_extra.STATUS_ROWS) if k not in skip]
    rows = []
    for kind in rng.sample(kinds, min(len(kinds), rng.choice((1, 1, 2, 2, 3)))):
        zh, en = banks_extra.STATUS_ROWS[kind]
        rows.append((x.pick(zh, en), _status_value(x, kind)))
    d.tags.append("trailing_status")
    d.noise += [f"{label} {value}" for label, value in rows]
    return rows


def status_lines(x: Choices, d: Draft) -> str:
    """Status rows as ``label：value`` lines, after a line break or a blank line."""
    rows = status_rows(x, d)
    lead = x.rng.choice(("\n", "\n", "\n\n"))
    return lead + "\n".join(f"{label}{x.colon()}{value}" for label, value in rows)


def closing_line(x: Choices, d: Draft, above: str, sign: bool) -> str:
    """A closing on a line of its own (``谢谢！``, ``此致\\n敬礼``, ``Best regards,``),
    after a line break or a blank line, under the text ``above``; with ``sign`` maybe
    the gold name under it."""
    rng = x.rng
    closing = x.punct(x.pick(banks_extra.CLOSING_LINES, banks_extra.CLOSING_LINES_EN))
    thanks = any(t in closing for t in _THANKS)  # no second "thank you" under the first
    if thanks and any(t in above[-8:] for t in _THANKS):
        closing = "Best regards," if x.english else rng.choice(banks_extra.CIZHI)
    d.tags.append("closing_line")
    name = d.values["name"]
    if sign and name and rng.random() < 0.5:
        closing += "\n" + name
    return rng.choice(("\n", "\n\n")) + closing


def contact_sentence(x: Choices, d: Draft) -> str:
    """A sentence with contact details, for right after the complaint: a phone number
    alone (a distractor), or the sender's own name, address or e-mail (the gold value,
    so the golds and the text always agree) with maybe a phone number."""
    rng = x.rng
    phone = draw_phone(rng)
    present = [k for k in CONTACT if d.values[k]]
    kind = "phone" if not present or rng.random() < 0.45 else rng.choice(present)
    d.tags.append("contact_after")
    if kind == "phone":
        template = x.pick(banks_extra.PHONE_AFTER, banks_extra.PHONE_AFTER_EN)
        sentence = x.fill(template, phone=phone)
        d.tags.append("distractor_phone")
        d.noise.append(sentence)
        return sentence
    template = x.pick(banks_extra.CONTACT_AFTER[kind], banks_extra.CONTACT_AFTER_EN[kind])
    return x.fill(template, phone=phone, **{kind: d.values[kind] or ""})


def with_contact_after(x: Choices, d: Draft, body: str) -> str:
    """``body`` (the complaint) with a contact sentence right after it: in the same
    paragraph or on the next line."""
    return join_sentences([body, contact_sentence(x, d)], x.rng, newline=0.35)
