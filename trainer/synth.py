"""The synthetic complaint generator: Faker zh_CN contacts, hand-written complaint
sentences (trainer.banks), varied layouts, missing fields and distractors.

Every record is checked: each non-null gold value occurs verbatim in the text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from core.schema import FIELDS
from trainer import banks
from trainer.data import Gold, Record, record_problems

_HALF = str.maketrans(banks.HALF_WIDTH)
_ENDS = "。！？!?"
_FAKER: list[Any] = []


@dataclass
class _Style:
    """How one synthetic text is laid out; chosen once per text."""

    layout: str
    half: bool
    multiline: bool
    spaces: bool
    joiner: str

    @classmethod
    def draw(cls, rng: random.Random) -> _Style:
        layout = rng.choice(("labelled", "labelled", "unlabelled", "inline"))
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
        return s.translate(_HALF) if self.half else s

    def tags(self) -> list[str]:
        return [
            self.layout,
            "halfwidth" if self.half else "fullwidth",
            "multiline" if self.multiline else "oneline",
        ] + (["spaces"] if self.spaces else [])


def _faker(seed: int) -> Any:
    if not _FAKER:
        from faker import Faker

        _FAKER.append(Faker("zh_CN"))
    _FAKER[0].seed_instance(seed)
    return _FAKER[0]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _draw_email(rng: random.Random, fake: Any) -> tuple[str, str]:
    kind = rng.choice(("faker", "faker", "free", "pinyin", "qq"))
    domain = rng.choice(banks.FREE_MAIL_DOMAINS)
    if kind == "faker":
        return fake.email(), "email_faker"
    if kind == "free":
        return f"{fake.user_name()}@{domain}", "email_free"
    if kind == "qq":
        return f"{rng.randint(1, 9)}{_digits(rng, rng.randint(5, 9))}@qq.com", "email_qq"
    given, family = fake.romanized_name().lower().split(" ", 1)
    user = rng.choice((f"{family}{given}", f"{given}.{family}", f"{family}_{given}"))
    return f"{user}{rng.choice(('', _digits(rng, 2), _digits(rng, 4)))}@{domain}", "email_pinyin"


def _draw_address(rng: random.Random, fake: Any) -> str:
    full = str(fake.address())
    street = full.rsplit(" ", 1)[0]
    room = f"{rng.randint(1, 12)}单元{rng.randint(1, 30)}0{rng.randint(1, 4)}室"
    return rng.choice((full, full, street, street + room))


def _draw_values(rng: random.Random, fake: Any, style: _Style,
                 plain: bool = False) -> tuple[Gold, list[str]]:
    """Gold values (some set to null unless ``plain``) and their tags."""
    topic = rng.choice(sorted(banks.COMPLAINTS))
    sentences = rng.sample(banks.COMPLAINTS[topic], rng.choice((1, 1, 2, 2, 3)))
    email, email_tag = _draw_email(rng, fake)
    question = style.punct("".join(sentences))
    drawn = (str(fake.name()), _draw_address(rng, fake), email, question)
    values: Gold = dict(zip(FIELDS, drawn, strict=True))
    missing = set() if plain else {k for k, rate in banks.MISSING_RATE.items()
                                   if rng.random() < rate}
    if "question" in missing and len(missing) > 2:
        missing.discard("question")  # a text without a complaint keeps two contact fields
    values.update(dict.fromkeys(missing))
    tags = [f"missing_{k}" for k in FIELDS if k in missing]
    tags += [f"topic:{topic}"] if values["question"] else []
    return values, tags + ([email_tag] if values["email"] else [])


def _segment(key: str, value: str | None, style: _Style, rng: random.Random) -> str | None:
    """One field as it appears in the text, or None when it is left out."""
    if style.layout == "unlabelled":
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
        phone = "1" + rng.choice("3456789") + _digits(rng, 9)
        bare = style.layout == "unlabelled" and rng.random() < 0.5
        label = "" if bare else rng.choice(banks.PHONE_LABELS) + style.sep(rng)
        found.append((label + phone, "distractor_phone"))
    if rng.random() < 0.15:
        order = rng.choice(("", "", "SF", "JD", "YT")) + _digits(rng, rng.randint(12, 18))
        found.append((rng.choice(banks.ORDER_LABELS) + style.sep(rng) + order, "distractor_order"))
    if rng.random() < 0.1:
        ident = _digits(rng, 17) + rng.choice("0123456789X")
        found.append((rng.choice(banks.ID_LABELS) + style.sep(rng) + ident, "distractor_id"))
    if rng.random() < 0.12:
        lead = style.punct(rng.choice(banks.OTHER_EMAIL_LEADS))
        found.append((lead + rng.choice(banks.OTHER_EMAILS), "distractor_email"))
    return [s for s, _ in found], [t for _, t in found]


def _join(parts: list[str], style: _Style, rng: random.Random) -> str:
    out = ""
    for part in parts:
        if out and not style.multiline and out[-1] in _ENDS:
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


def _synth_one(rng: random.Random, fake: Any, plain: bool = False) -> Record | None:
    """One synthetic record, or None when drawn values collide (the caller redraws)."""
    if plain:
        return _plain_one(rng, fake)
    style = _Style.draw(rng)
    values, tags = _draw_values(rng, fake, style)
    segs = {k: _segment(k, v, style, rng) for k, v in values.items()}
    tags += ["stated_absent"] if any(values[k] is None and segs[k] for k in FIELDS) else []
    contact = [s for k, s in segs.items() if s is not None and k != "question"]
    extra, extra_tags = _distractors(rng, style)
    for seg in extra:
        contact.insert(rng.randint(0, len(contact)), seg)
    if rng.random() < 0.35 and len(contact) > 1:
        rng.shuffle(contact)
        tags.append("shuffled")
    parts, where = _arrange(contact, segs["question"], rng)
    text = _join(parts, style, rng)
    if rng.random() < 0.3:
        text = style.punct(rng.choice(banks.GREETINGS)) + ("\n" if style.multiline else "") + text
        tags.append("greeting")
    if rng.random() < 0.25:
        glue = "\n" if style.multiline else ("" if text[-1] in _ENDS else style.joiner)
        text += glue + style.punct(rng.choice(banks.CLOSINGS))
        tags.append("closing")
    if style.spaces and rng.random() < 0.5:
        text = f"  {text} "
    record = Record(text, values, style.tags() + tags + extra_tags + ([where] if where else []))
    return record if _clean(record) else None


def _plain_one(rng: random.Random, fake: Any) -> Record | None:
    values, tags = _draw_values(rng, fake, PLAIN, plain=True)
    segs = [_segment(k, v, PLAIN, rng) for k, v in values.items()]
    text = _join([s for s in segs if s is not None], PLAIN, rng)
    record = Record(text, values, [*PLAIN.tags(), *tags, "plain"])
    return record if _clean(record) else None


def _clean(r: Record) -> bool:
    """No gold value inside the question or another party's email, so golds are unambiguous."""
    q, email = r.gold["question"] or "", r.gold["email"] or ""
    others = [v for k in ("name", "address", "email") if (v := r.gold[k])]
    clash = bool(email) and any(email in o or o in email for o in banks.OTHER_EMAILS)
    return not clash and not any(v in q for v in others)


def synth_records(n: int, seed: int, plain: bool = False) -> list[Record]:
    """``n`` synthetic records, identical for the same ``(n, seed, plain)``.

    ``plain`` gives one layout only (:data:`PLAIN`), as a baseline for ablations.

    Every record is checked: each non-null gold value occurs verbatim in the text,
    and the question span contains no other gold value.
    """
    rng = random.Random(seed)
    fake = _faker(seed)
    out: list[Record] = []
    while len(out) < n:
        record = _synth_one(rng, fake, plain)
        if record is None:
            continue
        problems = record_problems(record)
        assert not problems, f"synthetic record is invalid: {problems} in {record.text!r}"
        out.append(record)
    return out
