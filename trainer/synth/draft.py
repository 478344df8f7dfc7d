"""What every extended layout shares: the per-text choices (:class:`Choices`), the drawn
content of one text (:class:`Draft`) and the sentences laid around the complaint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from core.schema import FIELDS
from trainer import banks, banks_extra
from trainer.records import Gold, Record
from trainer.synth.common import (
    HALF,
    complaint_sentences,
    digits,
    draw_address,
    draw_email,
    glue,
    order_number,
    quote_tags,
)

# --- extended layouts ---------------------------------------------------------
#
# ``synth_records(..., extended=True)`` lays some texts out as e-mails, first-person
# stories, complaint-then-contact texts and ticket forms (banks in trainer.banks_extra).
#
# The question rule, the same for every layout (docs/training.md, "What the question
# is"): the question is the whole complaint exactly as it appears in the text: the
# problem, its history (numbers and dates inside its sentences), the request and a
# closing glued to it. Greetings, salutations, lead-ins and section labels
# ("事情是这样的：", "情况说明："), subject lines, signatures, sign-off lines of their
# own, contact sentences (a phone sentence included), form rows and header lines
# (ticket numbers, other parties' e-mails) are never part of it. The question ends
# where the complaint ends, whatever follows it (trainer.synth.after):
#
# - status rows on lines of their own: "…请尽快处理。\n受理渠道：热线\n处理状态：待受理";
# - a closing on a line of its own: "…请尽快处理。\n\n谢谢！", "…\n此致\n敬礼",
#   "…\nBest regards,\n王伟";
# - a contact sentence right after it, in the same paragraph or on the next line:
#   "…请尽快处理。有事可致电13812345678。", "…我的邮箱是a@b.cn，电话…。" (a name,
#   address or e-mail in it is the gold one);
# - the next cells and rows of a table: in "| 诉求内容 | …请尽快处理。 | 紧急程度 | 高 |"
#   the question is the complaint cell's content alone, and in a form the rows
#   under it ("处理意见：", "备注：") are not part of it either.
#
# An injection sentence is always placed inside the complaint (before, between or after
# its sentences, with nothing else in between), so it is part of the question span;
# the contact golds stay the real ones whatever it says.


_INJECTION_RATE = 0.25
ENGLISH_RATE = 0.1
_EXT_MISSING = {"name": 0.2, "address": 0.22, "email": 0.2, "question": 0.04}
_STATED_RATE = 0.4
CONTACT = ("name", "address", "email")
_FULL_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
NOISE_EMAILS = banks_extra.OTHER_EMAILS + banks.OTHER_EMAILS


@dataclass
class Choices:
    """Per-text choices of an extended text: its rng, punctuation width, English or not."""

    rng: random.Random
    width: str  # "full", "half" or "mixed" (decided anew at each use)
    english: bool
    rare_names: bool = False  # rare family names, and more name labels

    def _half(self) -> bool:
        return self.width == "half" or (self.width == "mixed" and self.rng.random() < 0.5)

    def colon(self) -> str:
        return self.rng.choice((":", ": ")) if self._half() else "："

    def punct(self, s: str) -> str:
        return s.translate(HALF) if self._half() else s

    def pick(self, zh: tuple[str, ...], en: tuple[str, ...]) -> str:
        """A Chinese phrasing, or mostly an English one in an English-ish text."""
        return self.rng.choice(en if self.english and self.rng.random() < 0.8 else zh)

    def label(self, key: str) -> str:
        zh = banks_extra.LABELS_ZH[key]
        if self.rare_names and key == "name":
            zh = zh + banks_extra.NAME_LABELS_MORE
        return self.pick(zh, banks_extra.LABELS_EN[key])

    def fill(self, template: str, **values: str) -> str:
        """A template with its punctuation (never the values) set to this text's width."""
        return self.punct(template).format(**values)


@dataclass
class Draft:
    """The drawn content of one extended text, before it is laid out."""

    values: Gold
    stated: set[str]  # null fields the text says are absent
    question: str | None
    tags: list[str]
    noise: list[str]  # distractor strings: no gold contact value may occur in them

    def stated_seg(self, x: Choices, key: str, labelled: bool) -> str | None:
        """A null field stated as absent (labelled "邮箱：无" or a sentence), else None."""
        if key not in self.stated:
            return None
        if labelled:
            return f"{x.label(key)}{x.colon()}{x.rng.choice(banks_extra.ABSENT_LABELLED)}"
        return x.punct(x.pick(banks_extra.ABSENT_SENTENCES[key],
                              banks_extra.ABSENT_SENTENCES_EN[key]))  # fmt: skip

    def contact_seg(self, x: Choices, key: str, labelled: bool) -> str | None:
        value = self.values[key]
        if value is None:
            return self.stated_seg(x, key, labelled)
        return f"{x.label(key)}{x.colon()}{value}" if labelled else value


def _run(pieces: list[str]) -> str:
    """Sentences glued into one span: nothing after a full-width stop, else a space."""
    out = ""
    for piece in pieces:
        out += ("" if not out or out[-1] in "。！？" else " ") + piece
    return out


def join_sentences(parts: list[str], rng: random.Random, newline: float = 0.0) -> str:
    """Whole sentences joined like ``_run``, with a line break now and then."""
    out = ""
    for part in parts:
        if out:
            out += "\n" if rng.random() < newline else ("" if out[-1] in "。！？，：；" else " ")
        out += part
    return out


def draw_phone(rng: random.Random) -> str:
    body = "1" + rng.choice("3456789") + digits(rng, 9)
    form = rng.choice(("plain", "plain", "dash", "space", "plus", "landline"))
    if form == "dash":
        return f"{body[:3]}-{body[3:7]}-{body[7:]}"
    if form == "space":
        return f"{body[:3]} {body[3:7]} {body[7:]}"
    if form == "plus":
        return "+86 " + body
    if form == "landline":
        return f"0{rng.randint(10, 29)}-{rng.randint(2, 8)}{digits(rng, 7)}"
    return body


#: Share of extended Chinese texts whose name is a compound or rare family name with
#: uncommon given-name characters: Faker's names are a narrow set, and a model
#: trained on them alone takes an unusual name for a label or misses it.
_RARE_NAME_RATE = 0.35


def _rare_name(rng: random.Random) -> str:
    compound = rng.random() < 0.6
    family = rng.choice(banks_extra.COMPOUND_SURNAMES if compound else banks_extra.RARE_SURNAMES)
    return family + "".join(rng.sample(banks_extra.GIVEN_CHARS, rng.choice((1, 2, 2))))


def draft(x: Choices, fake: Any, breaks: str) -> Draft:
    """Gold values, missing and stated-absent fields, the question span and their tags."""
    rng = x.rng
    topic = rng.choice(sorted(set(banks.COMPLAINTS) | set(banks_extra.COMPLAINTS)))
    new, old = banks_extra.COMPLAINTS.get(topic, ()), banks.COMPLAINTS.get(topic, ())
    pool = new if new and (not old or rng.random() < 0.7) else old
    english = x.english and topic in banks_extra.COMPLAINTS_EN and rng.random() < 0.6
    pool = banks_extra.COMPLAINTS_EN[topic] if english else pool
    count = min(rng.choice((1, 1, 2)), len(pool))
    sentences, q_tags = complaint_sentences(rng, rng.sample(pool, count), english)
    pieces = [x.punct(s) for s in sentences]
    closing = pieces[-1] if "q_closing" in q_tags else None
    email, email_tag = draw_email(rng, fake)
    name = fake.romanized_name() if x.english and rng.random() < 0.5 else str(fake.name())
    if x.rare_names and not x.english and rng.random() < _RARE_NAME_RATE:
        name = _rare_name(rng)
    address = draw_address(rng, fake)
    tags = [f"topic:{topic}"]
    if rng.random() < 0.08 and address != address.translate(_FULL_DIGITS):
        address = address.translate(_FULL_DIGITS)
        tags.append("fullwidth_digits")
    missing = {k for k, rate in _EXT_MISSING.items() if rng.random() < rate}
    if "question" in missing and len(missing) > 2:
        missing.discard("question")  # a text without a complaint keeps two contact fields
    stated = {k for k in CONTACT if k in missing and rng.random() < _STATED_RATE}
    noise: list[str] = []
    if "question" not in missing and rng.random() < _INJECTION_RATE:
        injection = rng.choice(banks_extra.INJECTIONS)
        pieces.insert(rng.randint(0, len(pieces)), injection)
        noise.append(injection)
        tags.append("injection")
    question = glue(pieces, rng, breaks, closing)
    values: Gold = dict(zip(FIELDS, (name, address, email, question), strict=True))
    values.update(dict.fromkeys(missing))
    tags += [*q_tags, *quote_tags(question)] if values["question"] else []
    tags = [f"missing_{k}" for k in FIELDS if k in missing] + tags
    tags += ["stated_absent"] if stated else []
    tags += [email_tag] if values["email"] else []
    if values["question"] is None:
        tags.remove(f"topic:{topic}")
    return Draft(values, stated, values["question"], tags, noise)


def closing_in_paragraph(x: Choices, d: Draft, zh: tuple[str, ...], en: tuple[str, ...]) -> str:
    """A closing glued to the complaint: it becomes part of the question when there is
    one (returns ""), else it is returned to stand on its own."""
    closing = x.punct(x.pick(zh, en))
    d.tags.append("closing")
    if d.question is None:
        return closing
    d.question = _run([d.question, closing])
    d.values["question"] = d.question
    return ""


def distractor_sentences(x: Choices, d: Draft, rates: tuple[float, float, float]) -> list[str]:
    """Sentences with a phone number, an order number or another party's e-mail."""
    rng, out = x.rng, []
    kinds = (("phone", banks_extra.PHONE_SENTENCES), ("order", banks_extra.ORDER_SENTENCES),
             ("email", banks_extra.OTHER_EMAIL_SENTENCES))  # fmt: skip
    for (kind, templates), rate in zip(kinds, rates, strict=True):
        if rng.random() >= rate:
            continue
        value = {"phone": draw_phone, "order": order_number}.get(
            kind, lambda r: r.choice(NOISE_EMAILS))
        drawn = value(rng)
        out.append(x.fill(rng.choice(templates), phone=drawn, order=drawn, other=drawn))
        d.tags.append(f"distractor_{kind}")
        d.noise.append(out[-1])
    return out


def complaint_body(x: Choices, d: Draft, lead: float) -> str:
    """The complaint run, maybe after a lead-in; a non-complaint sentence when null."""
    if d.question is None:
        return x.punct(x.pick(banks_extra.NO_COMPLAINT, banks_extra.NO_COMPLAINT_EN))
    if not x.english and x.rng.random() < lead:
        if x.rng.random() < 0.5:
            return x.punct(x.rng.choice(banks_extra.LEADS)) + d.question
        d.tags.append("question_label")
        return x.rng.choice(banks_extra.SECTION_LABELS) + x.colon() + d.question
    return d.question


def is_clean_extended(r: Record, d: Draft) -> bool:
    """No contact gold inside a distractor or an injection, no gold e-mail among others'."""
    email = r.gold["email"] or ""
    if email and any(email in o or o in email for o in NOISE_EMAILS):
        return False
    values = [v for k in CONTACT if (v := r.gold[k])]
    return not any(v in n for v in values for n in d.noise)
