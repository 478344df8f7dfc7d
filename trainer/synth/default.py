"""The default layouts: labelled, unlabelled and inline texts, full or half width,
on one line or several, with missing fields, distractors, greetings and closings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from core.schema import FIELDS
from trainer import banks, banks_extra
from trainer.records import Gold, Record
from trainer.synth.common import (
    ENDS,
    HALF,
    complaint_sentences,
    digits,
    draw_address,
    draw_email,
    glue,
    is_clean,
    quote_tags,
)
from trainer.synth.config import SynthConfig


@dataclass
class _Style:
    """How one synthetic text is laid out; chosen once per text."""

    layout: str
    half: bool
    multiline: bool
    spaces: bool
    joiner: str

    @classmethod
    def draw(cls, rng: random.Random, unlabelled: float | None = None) -> _Style:
        if unlabelled is None:  # the default mix: a quarter unlabelled, drawn as always
            layout = rng.choice(("labelled", "labelled", "unlabelled", "inline"))
        else:  # that share unlabelled; labelled and inline keep their 2:1
            rest = rng.choice(("labelled", "labelled", "inline"))
            layout = "unlabelled" if rng.random() < unlabelled else rest
        half = rng.random() < 0.3
        multiline = layout != "inline" and rng.random() < 0.45
        spaces = rng.random() < 0.2
        if multiline:
            joiner = "\n"
        else:
            joiner = rng.choice((", ", "; ", " ") if half else ("，", "；", " "))
            joiner = "，" if layout == "inline" and not half else joiner
        return cls(layout, half, multiline, spaces, joiner + (" " if spaces else ""))

    def sep(self, rng: random.Random) -> str:
        colon = rng.choice((":", ": ")) if self.half else "："
        return f" {colon.strip()} " if self.spaces and rng.random() < 0.5 else colon

    def punct(self, s: str) -> str:
        return s.translate(HALF) if self.half else s

    def tags(self) -> list[str]:
        return [
            self.layout,
            "halfwidth" if self.half else "fullwidth",
            "multiline" if self.multiline else "oneline",
        ] + (["spaces"] if self.spaces else [])


def draw_values(rng: random.Random, fake: Any, style: _Style,
                 plain: bool = False) -> tuple[Gold, list[str]]:
    """Gold values (some set to null unless ``plain``) and their tags."""
    topic = rng.choice(sorted(banks.COMPLAINTS))
    problems = rng.sample(banks.COMPLAINTS[topic], rng.choice((1, 1, 2)))
    sentences, q_tags = complaint_sentences(rng, problems, english=False)
    email, email_tag = draw_email(rng, fake)
    breaks = "\n\t" if style.multiline else ("" if style is PLAIN else "\t")
    closing = style.punct(sentences[-1]) if "q_closing" in q_tags else None
    question = glue([style.punct(s) for s in sentences], rng, breaks, closing)
    drawn = (str(fake.name()), draw_address(rng, fake), email, question)
    values: Gold = dict(zip(FIELDS, drawn, strict=True))
    missing = set() if plain else {k for k, rate in banks.MISSING_RATE.items()
                                   if rng.random() < rate}
    if "question" in missing and len(missing) > 2:
        missing.discard("question")  # a text without a complaint keeps two contact fields
    values.update(dict.fromkeys(missing))
    tags = [f"missing_{k}" for k in FIELDS if k in missing]
    tags += [f"topic:{topic}", *q_tags, *quote_tags(question)] if values["question"] else []
    return values, tags + ([email_tag] if values["email"] else [])


def segment(key: str, value: str | None, style: _Style, rng: random.Random) -> str | None:
    """One field as it appears in the text, or None when it is left out."""
    if style.layout == "unlabelled":
        if key == "question" and value is not None and rng.random() < 0.2:
            return style.punct(rng.choice(banks_extra.SECTION_LABELS)) + style.sep(rng) + value
        return value
    if style.layout == "inline":
        return None if value is None else style.punct(rng.choice(banks.INLINE[key])) + value
    label = rng.choice(banks.LABELS[key])
    if value is None:
        stated = rng.random() < 0.35
        return f"{label}{style.sep(rng)}{rng.choice(banks.ABSENT_WORDS)}" if stated else None
    return f"{label}{style.sep(rng)}{value}"


def _distractors(rng: random.Random, style: _Style) -> tuple[list[str], list[str]]:
    """Phone, order, ID numbers and another party's email, each with its tag."""
    found: list[tuple[str, str]] = []
    if rng.random() < 0.25:
        phone = "1" + rng.choice("3456789") + digits(rng, 9)
        bare = style.layout == "unlabelled" and rng.random() < 0.5
        label = "" if bare else rng.choice(banks.PHONE_LABELS) + style.sep(rng)
        found.append((label + phone, "distractor_phone"))
    if rng.random() < 0.15:
        order = rng.choice(("", "", "SF", "JD", "YT")) + digits(rng, rng.randint(12, 18))
        found.append((rng.choice(banks.ORDER_LABELS) + style.sep(rng) + order, "distractor_order"))
    if rng.random() < 0.1:
        ident = digits(rng, 17) + rng.choice("0123456789X")
        found.append((rng.choice(banks.ID_LABELS) + style.sep(rng) + ident, "distractor_id"))
    if rng.random() < 0.12:
        lead = style.punct(rng.choice(banks.OTHER_EMAIL_LEADS))
        found.append((lead + rng.choice(banks.OTHER_EMAILS), "distractor_email"))
    return [s for s, _ in found], [t for _, t in found]


def join_parts(parts: list[str], style: _Style, rng: random.Random) -> str:
    out = ""
    for part in parts:
        if out and not style.multiline and out[-1] in ENDS:
            out += rng.choice(("", " "))
        elif out:
            out += style.joiner
        out += part
    return out


def _arrange(contact: list[str], question: str | None, rng: random.Random) -> tuple[list[str], str]:
    """Field order: the complaint first, last or (rarely) in the middle."""
    if question is None:
        return contact, ""
    roll = rng.random()
    if roll < 0.25 or not contact:
        return [question, *contact], "complaint_first" if contact else "complaint_only"
    if roll < 0.35 and len(contact) >= 2:
        cut = rng.randint(1, len(contact) - 1)
        return [*contact[:cut], question, *contact[cut:]], "complaint_middle"
    return [*contact, question], "complaint_last"


#: The seed tutorial's kind of text: every field labelled, full width, one line,
#: contact details then the complaint, nothing missing, no distractors.
PLAIN = _Style("labelled", half=False, multiline=False, spaces=False, joiner="，")


def synth_one(rng: random.Random, fake: Any, config: SynthConfig) -> Record | None:
    """One synthetic record, or None when drawn values collide (the caller redraws)."""
    style = _Style.draw(rng, config.unlabelled)
    values, tags = draw_values(rng, fake, style)
    segs = {k: segment(k, v, style, rng) for k, v in values.items()}
    tags += ["stated_absent"] if any(values[k] is None and segs[k] for k in FIELDS) else []
    contact = [s for k, s in segs.items() if s is not None and k != "question"]
    extra, extra_tags = _distractors(rng, style)
    for seg in extra:
        contact.insert(rng.randint(0, len(contact)), seg)
    if rng.random() < 0.35 and len(contact) > 1:
        rng.shuffle(contact)
        tags.append("shuffled")
    if style.layout == "unlabelled" and segs["question"] != values["question"]:
        tags.append("question_label")
    parts, where = _arrange(contact, segs["question"], rng)
    text = join_parts(parts, style, rng)
    if rng.random() < 0.3:
        text = style.punct(rng.choice(banks.GREETINGS)) + ("\n" if style.multiline else "") + text
        tags.append("greeting")
    if rng.random() < 0.25:
        glue = "\n" if style.multiline else ("" if text[-1] in ENDS else style.joiner)
        closing = glue + style.punct(rng.choice(banks.CLOSINGS))
        text += closing
        tags.append("closing")
        if values["question"] and text.endswith(values["question"] + closing) and glue == "":
            # a closing glued to the complaint's last sentence belongs to the complaint
            values["question"] += closing
    if rng.random() < 0.12 and values["question"]:
        text = _subject_line(rng, tags, style) + ("\n" if style.multiline else " ") + text
        tags.append("subject")
    if style.spaces and rng.random() < 0.5:
        text = f"  {text} "
    record = Record(text, values, style.tags() + tags + extra_tags + ([where] if where else []))
    return record if is_clean(record) else None


def _subject_line(rng: random.Random, tags: list[str], style: _Style) -> str:
    """A subject line naming the complaint's topic; never part of the question."""
    topic = next(t.split(":", 1)[1] for t in tags if t.startswith("topic:"))
    subject = rng.choice(banks_extra.SUBJECTS).format(topic=banks_extra.TOPIC_ZH[topic])
    return rng.choice(banks_extra.SUBJECT_LINES).format(subject=style.punct(subject))
