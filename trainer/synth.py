"""The synthetic complaint generator: Faker zh_CN contacts, hand-written complaint
sentences (trainer.banks), varied layouts, missing fields and distractors.

``extended=True`` adds e-mail, narrative, contact-last, ticket-form and injection
layouts (banks in trainer.banks_extra) to about 40% of the texts.

The question is the whole complaint, in every layout: 2 to 6 sentences with the
problem, maybe its history (dates, order and ticket numbers inside the sentences),
maybe a sentence with half-width quotes or backslashes, a request and a polite
closing. Section labels, subject lines, greetings and contact details around it
are never part of it.

Every record is checked: each non-null gold value occurs verbatim in the text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.schema import FIELDS
from trainer import banks, banks_extra
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


#: At most this many sentences in a question (the problem, history, request, closing).
MAX_SENTENCES = 6
_QUOTE_RATE = 0.22


def _fill(rng: random.Random, template: str) -> str:
    """A history or quote template with its numbers, dates and names drawn."""
    return template.format(
        date=_date(rng), order=_order(rng), times=rng.choice(banks_extra.TIMES),
        times_en=rng.choice(banks_extra.TIMES_EN), code=_digits(rng, rng.randint(3, 5)),
        brand=rng.choice(banks_extra.QUOTE_BRANDS),
        status=rng.choice(banks_extra.QUOTE_STATUSES),
        status_en=rng.choice(banks_extra.QUOTE_STATUSES_EN),
    )


def _complaint(rng: random.Random, problems: list[str],
               english: bool) -> tuple[list[str], list[str]]:
    """The question's sentences and tags: the problem (now and then after one history
    sentence), then maybe history and a quoted sentence, usually a request, sometimes
    a closing; 2 to MAX_SENTENCES in all."""
    history_bank = banks_extra.HISTORY_EN if english else banks_extra.HISTORY
    history = [_fill(rng, t) for t in rng.sample(history_bank, rng.choice((0, 1, 1, 2)))]
    if rng.random() < _QUOTE_RATE:
        quoted = banks_extra.QUOTED_EN if english else banks_extra.QUOTED
        history.insert(rng.randint(0, len(history)), _fill(rng, rng.choice(quoted)))
    requests = banks_extra.REQUESTS_EN if english else banks_extra.REQUESTS
    closings = banks_extra.QUESTION_CLOSINGS_EN if english else banks_extra.QUESTION_CLOSINGS
    tail = [rng.choice(requests)] if rng.random() < 0.85 else []
    tail += [rng.choice(closings)] if rng.random() < 0.3 else []
    # one place is left for a closing that the layout glues on after the request
    while len(problems) + len(history) + len(tail) > MAX_SENTENCES - 1:
        history.pop()
    if len(problems) + len(history) + len(tail) < 2:
        tail.insert(0, rng.choice(requests))
    sentences = [*problems, *history, *tail]
    if history and rng.random() < 0.15:  # the story may begin with its history
        sentences = [history[0], *problems, *history[1:], *tail]
    tags = ["multi_sentence"] if len(sentences) >= 3 else []
    tags += ["q_history"] if history else []
    tags += ["q_closing"] if tail and tail[-1] in closings else []
    return sentences, tags


def _glue(pieces: list[str], rng: random.Random, breaks: str, closing: str | None) -> str:
    """Sentences joined into one span: nothing after a full-width stop, else a space;
    now and then one of ``breaks`` (a line break or a tab) instead, but never before
    the ``closing``: a closing on a line of its own is a sign-off, not the complaint."""
    out = ""
    for piece in pieces:
        if out and breaks and piece != closing and rng.random() < 0.08:
            out += rng.choice(breaks)
        elif out:
            out += "" if out[-1] in "。！？" else " "
        out += piece
    return out


def _quote_tags(question: str | None) -> list[str]:
    return ["quotes"] if question and ('"' in question or "\\" in question) else []


def _draw_values(rng: random.Random, fake: Any, style: _Style,
                 plain: bool = False) -> tuple[Gold, list[str]]:
    """Gold values (some set to null unless ``plain``) and their tags."""
    topic = rng.choice(sorted(banks.COMPLAINTS))
    problems = rng.sample(banks.COMPLAINTS[topic], rng.choice((1, 1, 2)))
    sentences, q_tags = _complaint(rng, problems, english=False)
    email, email_tag = _draw_email(rng, fake)
    breaks = "\n\t" if style.multiline else ("" if style is PLAIN else "\t")
    closing = style.punct(sentences[-1]) if "q_closing" in q_tags else None
    question = _glue([style.punct(s) for s in sentences], rng, breaks, closing)
    drawn = (str(fake.name()), _draw_address(rng, fake), email, question)
    values: Gold = dict(zip(FIELDS, drawn, strict=True))
    missing = set() if plain else {k for k, rate in banks.MISSING_RATE.items()
                                   if rng.random() < rate}
    if "question" in missing and len(missing) > 2:
        missing.discard("question")  # a text without a complaint keeps two contact fields
    values.update(dict.fromkeys(missing))
    tags = [f"missing_{k}" for k in FIELDS if k in missing]
    tags += [f"topic:{topic}", *q_tags, *_quote_tags(question)] if values["question"] else []
    return values, tags + ([email_tag] if values["email"] else [])


def _segment(key: str, value: str | None, style: _Style, rng: random.Random) -> str | None:
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


def _synth_one(rng: random.Random, fake: Any, plain: bool = False,
               unlabelled: float | None = None) -> Record | None:
    """One synthetic record, or None when drawn values collide (the caller redraws)."""
    if plain:
        return _plain_one(rng, fake)
    style = _Style.draw(rng, unlabelled)
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
    if style.layout == "unlabelled" and segs["question"] != values["question"]:
        tags.append("question_label")
    parts, where = _arrange(contact, segs["question"], rng)
    text = _join(parts, style, rng)
    if rng.random() < 0.3:
        text = style.punct(rng.choice(banks.GREETINGS)) + ("\n" if style.multiline else "") + text
        tags.append("greeting")
    if rng.random() < 0.25:
        glue = "\n" if style.multiline else ("" if text[-1] in _ENDS else style.joiner)
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
    return record if _clean(record) else None


def _subject_line(rng: random.Random, tags: list[str], style: _Style) -> str:
    """A subject line naming the complaint's topic; never part of the question."""
    topic = next(t.split(":", 1)[1] for t in tags if t.startswith("topic:"))
    subject = rng.choice(banks_extra.SUBJECTS).format(topic=banks_extra.TOPIC_ZH[topic])
    return rng.choice(banks_extra.SUBJECT_LINES).format(subject=style.punct(subject))


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
# (ticket numbers, other parties' e-mails) are never part of it. An
# injection sentence is always placed inside the complaint (before, between or after
# its sentences, with nothing else in between), so it is part of the question span;
# the contact golds stay the real ones whatever it says.

#: The layouts that ``extended=True`` adds; "injection" rides on one of them.
EXTENDED_LAYOUTS = ("email_body", "narrative", "contact_last", "form_table")
EXTENDED_TAGS = (*EXTENDED_LAYOUTS, "injection")
_EXTENDED_SHARE = 0.4
_INJECTION_RATE = 0.25
_ENGLISH_RATE = 0.1
_EXT_MISSING = {"name": 0.2, "address": 0.22, "email": 0.2, "question": 0.04}
_STATED_RATE = 0.4
_CONTACT = ("name", "address", "email")
_FULL_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
_NOISE_EMAILS = banks_extra.OTHER_EMAILS + banks.OTHER_EMAILS


@dataclass
class _Ext:
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
        return s.translate(_HALF) if self._half() else s

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
class _Draft:
    """The drawn content of one extended text, before it is laid out."""

    values: Gold
    stated: set[str]  # null fields the text says are absent
    question: str | None
    tags: list[str]
    noise: list[str]  # distractor strings: no gold contact value may occur in them

    def stated_seg(self, x: _Ext, key: str, labelled: bool) -> str | None:
        """A null field stated as absent (labelled "邮箱：无" or a sentence), else None."""
        if key not in self.stated:
            return None
        if labelled:
            return f"{x.label(key)}{x.colon()}{x.rng.choice(banks_extra.ABSENT_LABELLED)}"
        return x.punct(x.pick(banks_extra.ABSENT_SENTENCES[key],
                              banks_extra.ABSENT_SENTENCES_EN[key]))  # fmt: skip

    def contact_seg(self, x: _Ext, key: str, labelled: bool) -> str | None:
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


def _sentences(parts: list[str], rng: random.Random, newline: float = 0.0) -> str:
    """Whole sentences joined like ``_run``, with a line break now and then."""
    out = ""
    for part in parts:
        if out:
            out += "\n" if rng.random() < newline else ("" if out[-1] in "。！？，：；" else " ")
        out += part
    return out


def _phone(rng: random.Random) -> str:
    body = "1" + rng.choice("3456789") + _digits(rng, 9)
    form = rng.choice(("plain", "plain", "dash", "space", "plus", "landline"))
    if form == "dash":
        return f"{body[:3]}-{body[3:7]}-{body[7:]}"
    if form == "space":
        return f"{body[:3]} {body[3:7]} {body[7:]}"
    if form == "plus":
        return "+86 " + body
    if form == "landline":
        return f"0{rng.randint(10, 29)}-{rng.randint(2, 8)}{_digits(rng, 7)}"
    return body


def _order(rng: random.Random) -> str:
    return rng.choice(("", "", "GD", "SF", "JD", "WO-")) + _digits(rng, rng.randint(10, 16))


def _date(rng: random.Random) -> str:
    m, d = rng.randint(1, 12), rng.randint(1, 28)
    if rng.random() < 0.5:
        return f"{rng.randint(2022, 2025)}年{m}月{d}日"
    hour, minute = rng.randint(8, 21), rng.randint(0, 59)
    return f"{rng.randint(2022, 2025)}-{m:02d}-{d:02d} {hour:02d}:{minute:02d}"


#: Share of extended Chinese texts whose name is a compound or rare family name with
#: uncommon given-name characters: Faker's names are a narrow set, and a model
#: trained on them alone takes an unusual name for a label or misses it.
_RARE_NAME_RATE = 0.35


def _rare_name(rng: random.Random) -> str:
    compound = rng.random() < 0.6
    family = rng.choice(banks_extra.COMPOUND_SURNAMES if compound else banks_extra.RARE_SURNAMES)
    return family + "".join(rng.sample(banks_extra.GIVEN_CHARS, rng.choice((1, 2, 2))))


def _ext_draft(x: _Ext, fake: Any, breaks: str) -> _Draft:
    """Gold values, missing and stated-absent fields, the question span and their tags."""
    rng = x.rng
    topic = rng.choice(sorted(set(banks.COMPLAINTS) | set(banks_extra.COMPLAINTS)))
    new, old = banks_extra.COMPLAINTS.get(topic, ()), banks.COMPLAINTS.get(topic, ())
    pool = new if new and (not old or rng.random() < 0.7) else old
    english = x.english and topic in banks_extra.COMPLAINTS_EN and rng.random() < 0.6
    pool = banks_extra.COMPLAINTS_EN[topic] if english else pool
    count = min(rng.choice((1, 1, 2)), len(pool))
    sentences, q_tags = _complaint(rng, rng.sample(pool, count), english)
    pieces = [x.punct(s) for s in sentences]
    closing = pieces[-1] if "q_closing" in q_tags else None
    email, email_tag = _draw_email(rng, fake)
    name = fake.romanized_name() if x.english and rng.random() < 0.5 else str(fake.name())
    if x.rare_names and not x.english and rng.random() < _RARE_NAME_RATE:
        name = _rare_name(rng)
    address = _draw_address(rng, fake)
    tags = [f"topic:{topic}"]
    if rng.random() < 0.08 and address != address.translate(_FULL_DIGITS):
        address = address.translate(_FULL_DIGITS)
        tags.append("fullwidth_digits")
    missing = {k for k, rate in _EXT_MISSING.items() if rng.random() < rate}
    if "question" in missing and len(missing) > 2:
        missing.discard("question")  # a text without a complaint keeps two contact fields
    stated = {k for k in _CONTACT if k in missing and rng.random() < _STATED_RATE}
    noise: list[str] = []
    if "question" not in missing and rng.random() < _INJECTION_RATE:
        injection = rng.choice(banks_extra.INJECTIONS)
        pieces.insert(rng.randint(0, len(pieces)), injection)
        noise.append(injection)
        tags.append("injection")
    question = _glue(pieces, rng, breaks, closing)
    values: Gold = dict(zip(FIELDS, (name, address, email, question), strict=True))
    values.update(dict.fromkeys(missing))
    tags += [*q_tags, *_quote_tags(question)] if values["question"] else []
    tags = [f"missing_{k}" for k in FIELDS if k in missing] + tags
    tags += ["stated_absent"] if stated else []
    tags += [email_tag] if values["email"] else []
    if values["question"] is None:
        tags.remove(f"topic:{topic}")
    return _Draft(values, stated, values["question"], tags, noise)


def _closing_in_paragraph(x: _Ext, d: _Draft, zh: tuple[str, ...], en: tuple[str, ...]) -> str:
    """A closing glued to the complaint: it becomes part of the question when there is
    one (returns ""), else it is returned to stand on its own."""
    closing = x.punct(x.pick(zh, en))
    d.tags.append("closing")
    if d.question is None:
        return closing
    d.question = _run([d.question, closing])
    d.values["question"] = d.question
    return ""


def _distractor_sentences(x: _Ext, d: _Draft, rates: tuple[float, float, float]) -> list[str]:
    """Sentences with a phone number, an order number or another party's e-mail."""
    rng, out = x.rng, []
    kinds = (("phone", banks_extra.PHONE_SENTENCES), ("order", banks_extra.ORDER_SENTENCES),
             ("email", banks_extra.OTHER_EMAIL_SENTENCES))  # fmt: skip
    for (kind, templates), rate in zip(kinds, rates, strict=True):
        if rng.random() >= rate:
            continue
        value = {"phone": _phone, "order": _order}.get(kind, lambda r: r.choice(_NOISE_EMAILS))
        drawn = value(rng)
        out.append(x.fill(rng.choice(templates), phone=drawn, order=drawn, other=drawn))
        d.tags.append(f"distractor_{kind}")
        d.noise.append(out[-1])
    return out


def _body(x: _Ext, d: _Draft, lead: float) -> str:
    """The complaint run, maybe after a lead-in; a non-complaint sentence when null."""
    if d.question is None:
        return x.punct(x.pick(banks_extra.NO_COMPLAINT, banks_extra.NO_COMPLAINT_EN))
    if not x.english and x.rng.random() < lead:
        if x.rng.random() < 0.5:
            return x.punct(x.rng.choice(banks_extra.LEADS)) + d.question
        d.tags.append("question_label")
        return x.rng.choice(banks_extra.SECTION_LABELS) + x.colon() + d.question
    return d.question


def _contact_last(x: _Ext, d: _Draft) -> str | None:
    """The complaint (and maybe more sentences) first, every contact detail at the end."""
    rng = x.rng
    labelled = rng.random() < 0.6
    keys = list(_CONTACT)
    if rng.random() < 0.3:
        rng.shuffle(keys)
        d.tags.append("shuffled")
    segs = [s for k in keys if (s := d.contact_seg(x, k, labelled))]
    if not segs:
        return None
    if rng.random() < 0.25:
        phone = _phone(rng)
        label = x.pick(("电话", "手机"), ("Phone", "Tel"))
        seg = f"{label}{x.colon()}{phone}" if labelled else phone
        segs.insert(rng.randint(0, len(segs)), seg)
        d.tags.append("distractor_phone")
        d.noise.append(seg)
    unlabelled_sentence = not labelled and any(s[-1] in "。." for s in segs)
    joiners = ("；", "，", " ", "\n", " | ") if labelled else (" ", "，", "\n", " / ")
    joiner = "\n" if unlabelled_sentence else rng.choice(joiners)
    lone = ""
    if rng.random() < 0.2:
        lone = _closing_in_paragraph(x, d, banks.CLOSINGS, banks_extra.EMAIL_CLOSINGS_EN)
    head = [_body(x, d, lead=0.15), *([lone] if lone else [])]
    if rng.random() < 0.3:
        head.insert(0, x.punct(x.pick(banks.GREETINGS, banks_extra.SALUTATIONS_EN)))
        d.tags.append("greeting")
    # a phone sentence is a contact detail and stands on its own line; a reference
    # number or another party's address in the story belongs to the complaint's history
    others = _distractor_sentences(x, d, (0.1, 0.0, 0.0))
    breaks = banks_extra.CONTACT_BREAKS_EN if x.english else banks_extra.CONTACT_BREAKS
    brk = x.punct(rng.choice(breaks)) if joiner == "\n" or rng.random() < 0.6 else " "
    d.tags.append("labelled" if labelled else "unlabelled")
    tail = "\n" + _sentences(others, rng) if others else ""
    return _sentences(head, rng) + tail + brk + joiner.join(segs)


def _intro(x: _Ext, d: _Draft) -> str | None:
    """The sentence(s) of a story that give the name and the address."""
    name, address = d.values["name"], d.values["address"]
    if name and address:
        template = x.pick(banks_extra.INTRO_BOTH, banks_extra.INTRO_BOTH_EN)
        return x.fill(template, name=name, address=address)
    parts = []
    if name:
        parts.append(x.fill(x.pick(banks_extra.INTRO_NAME, banks_extra.INTRO_NAME_EN), name=name))
    if address:
        template = x.pick(banks_extra.INTRO_ADDRESS, banks_extra.INTRO_ADDRESS_EN)
        parts.append(x.fill(template, address=address))
    parts += [s for k in ("name", "address") if (s := d.stated_seg(x, k, labelled=False))]
    x.rng.shuffle(parts)
    return _sentences(parts, x.rng) or None


def _narrative(x: _Ext, d: _Draft) -> str:
    """A first-person story with the contact details woven into its sentences."""
    rng = x.rng
    name, address, email = (d.values[k] for k in _CONTACT)
    if d.question and not x.english and rng.random() < 0.3:
        _closing_in_paragraph(x, d, banks_extra.STORY_CLOSINGS, banks_extra.STORY_CLOSINGS)
    template = x.pick(banks_extra.EMAIL_SENTENCES, banks_extra.EMAIL_SENTENCES_EN)
    mail = x.fill(template, email=email) if email else d.stated_seg(x, "email", labelled=False)
    # a phone sentence is a contact detail; reference numbers belong to the story
    contact = [s for s in (mail, *_distractor_sentences(x, d, (0.2, 0.0, 0.0))) if s]
    rng.shuffle(contact)
    if name and address and d.question and not x.english and rng.random() < 0.3:
        # "我叫X，住在Y，<complaint>": the complaint goes on in the intro's sentence
        intro = x.fill(rng.choice(banks_extra.INTRO_WOVEN), name=name, address=address)
        d.tags.append("woven")
        return _sentences([intro + d.question, *contact], rng, newline=0.1)
    body = _body(x, d, lead=0.25)
    who = _intro(x, d)
    roll = rng.random()
    if who and roll < 0.6:  # who and where, the story, the rest
        parts = [who, body, *contact]
    elif who and roll < 0.8:  # the story first, then who and where
        parts = [body, who, *contact]
    else:  # anywhere
        parts = [s for s in (who, *contact) if s]
        parts.insert(rng.randint(0, len(parts)), body)
    return _sentences(parts, rng, newline=0.2)


def _signature(x: _Ext, d: _Draft, email_shown: bool) -> str:
    """The sign-off and signature block of an e-mail, in one of several forms."""
    rng = x.rng
    name, address, email = (d.values[k] for k in _CONTACT)
    if email_shown and rng.random() < 0.5:
        email = None  # already in the From: header; the signature need not repeat it
    form = rng.choice(("cizhi", "dash", "lines", "labelled", "compact", "jingshang"))
    if x.english:
        form = rng.choice(("english", "english", "labelled", "compact"))
    if form == "dash" and name:  # "—— 张三（邮箱 …）" and the address below
        head = "—— " + name
        if email:
            form = rng.choice(("（邮箱 {email}）", "（{email}）", " <{email}>"))
            head += x.fill(form, email=email)
        where = f"{x.label('address')}{x.colon()}{address}" if address else None
        no_mail = d.stated_seg(x, "email", True) if d.values["email"] is None else None
        return "\n".join(s for s in (head, where or d.stated_seg(x, "address", True), no_mail) if s)
    form = "lines" if form == "dash" else form
    labelled = form in ("labelled", "english") or (form != "compact" and rng.random() < 0.4)
    shown = {"name": name, "address": address, "email": email}
    segs = []
    for key in _CONTACT:
        value = shown[key]
        if value is None:
            segs.append(None if key == "email" and email_shown else d.stated_seg(x, key, labelled))
        else:
            # a labelled signature may still give the name bare ("王伟\n地址：…")
            bare = not labelled or (key == "name" and rng.random() < 0.5)
            segs.append(value if bare else f"{x.label(key)}{x.colon()}{value}")
    lines = [s for s in segs if s]
    if form == "compact":
        return " | ".join(lines)
    if form == "jingshang" and name and lines and lines[0] == name:
        lines[0] = f"{name} 敬上"
    opener = {"cizhi": rng.choice(banks_extra.CIZHI),
              "english": rng.choice(banks_extra.SIGN_OFFS_EN)}.get(form)  # fmt: skip
    if rng.random() < 0.3 and not x.english:
        lines.append(_date(rng))
    return "\n".join([*([opener] if opener else []), *lines])


def _email_body(x: _Ext, d: _Draft) -> str:
    """An e-mail: maybe headers and a subject, a salutation, the body, a signature."""
    rng = x.rng
    name, email = d.values["name"], d.values["email"]
    topic = next((t.split(":", 1)[1] for t in d.tags if t.startswith("topic:")), "")
    lines: list[str] = []
    email_shown = False
    if rng.random() < 0.35:
        if email:
            named = bool(name) and rng.random() < 0.5
            forms = banks_extra.FROM_WITH_NAME if named else banks_extra.FROM_BARE
            lines.append(rng.choice(forms).format(name=name, email=email))
            email_shown = True
        if rng.random() < 0.5:
            other = rng.choice(_NOISE_EMAILS)
            lines.append(rng.choice(banks_extra.TO_LINES).format(other=other))
            d.tags.append("distractor_email")
            d.noise.append(lines[-1])
        if rng.random() < 0.3:
            lines.append(rng.choice(banks_extra.DATE_LINES).format(date=_date(rng)))
        d.tags.append("email_header")
    if topic and rng.random() < 0.55:
        if x.english:
            subject = rng.choice(banks_extra.SUBJECTS_EN).format(topic=banks_extra.TOPIC_EN[topic])
        else:
            subject = rng.choice(banks_extra.SUBJECTS).format(topic=banks_extra.TOPIC_ZH[topic])
        lines.append(rng.choice(banks_extra.SUBJECT_LINES).format(subject=x.punct(subject)))
        d.tags.append("subject")
    if lines and rng.random() < 0.6:
        lines.append("")
    lines.append(x.punct(x.pick(banks_extra.SALUTATIONS, banks_extra.SALUTATIONS_EN)))
    indent = rng.choice(("", "", "　　", "    "))
    lines.append(indent + _body(x, d, lead=0.2))
    others = _distractor_sentences(x, d, (0.2, 0.0, 0.0))  # as in _contact_last
    if others:  # on a line of their own: not part of the complaint paragraph
        lines.append(_sentences(others, rng))
    if rng.random() < 0.5:
        lines.append(x.punct(x.pick(banks_extra.EMAIL_CLOSINGS, banks_extra.EMAIL_CLOSINGS_EN)))
        d.tags.append("closing")
    signature = _signature(x, d, email_shown)
    if signature:
        lines.append(signature)
    text = "\n".join(lines)
    if rng.random() < 0.15:
        tail = rng.choice(banks_extra.QUOTED_REPLIES + banks_extra.AGENT_SIGNATURES)
        other = rng.choice(_NOISE_EMAILS)
        text += tail.format(other=other)
        d.tags.append("distractor_email")
        d.noise.append(other)
    return text


def _form_value(x: _Ext, kind: str) -> str:
    rng = x.rng
    draw = {
        "ticket": lambda: _order(rng),
        "time": lambda: _date(rng),
        "channel": lambda: rng.choice(banks_extra.CHANNELS),
        "priority": lambda: rng.choice(banks_extra.PRIORITIES),
        "phone": lambda: _phone(rng),
        "status": lambda: rng.choice(banks_extra.STATUSES),
        "agent": lambda: rng.choice(banks_extra.AGENTS),
        "cc": lambda: rng.choice(_NOISE_EMAILS),
    }
    return draw[kind]()


_EXTRA_TAGS = {"ticket": "distractor_order", "phone": "distractor_phone", "cc": "distractor_email"}


def _form_table(x: _Ext, d: _Draft) -> str:
    """A ticket form or table: labelled rows, non-target fields among them."""
    rng = x.rng
    style = rng.choice(("bracket", "square", "pipe", "markdown", "colon", "kv"))
    kv = style == "kv"
    rows: list[tuple[str, str]] = []
    keys = list(_CONTACT)
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


_RENDER: dict[str, Callable[[_Ext, _Draft], str | None]] = {
    "email_body": _email_body,
    "narrative": _narrative,
    "contact_last": _contact_last,
    "form_table": _form_table,
}


def _extended_one(rng: random.Random, fake: Any, rare_names: bool) -> Record | None:
    """One record in an extended layout, or None when it must be redrawn."""
    layout = rng.choice(EXTENDED_LAYOUTS)
    width = rng.choices(("full", "half", "mixed"), (0.55, 0.25, 0.2))[0]
    x = _Ext(rng, width, english=rng.random() < _ENGLISH_RATE, rare_names=rare_names)
    d = _ext_draft(x, fake, breaks="" if layout == "form_table" else "\n\t")
    text = _RENDER[layout](x, d)
    if text is None:
        return None
    width_tag = {"full": "fullwidth", "half": "halfwidth", "mixed": "mixed_width"}[width]
    tags = [layout, width_tag, "multiline" if "\n" in text else "oneline"]
    tags += ["english"] if x.english else []
    record = Record(text, d.values, tags + list(dict.fromkeys(d.tags)))
    return record if _clean(record) and _clean_extended(record, d) else None


def _clean_extended(r: Record, d: _Draft) -> bool:
    """No contact gold inside a distractor or an injection, no gold e-mail among others'."""
    email = r.gold["email"] or ""
    if email and any(email in o or o in email for o in _NOISE_EMAILS):
        return False
    values = [v for k in _CONTACT if (v := r.gold[k])]
    return not any(v in n for v in values for n in d.noise)


def synth_records(n: int, seed: int, plain: bool = False, extended: bool = False,
                  rare_names: bool = False, unlabelled: float | None = None) -> list[Record]:
    """``n`` synthetic records, identical for the same arguments.

    ``plain`` gives one layout only (:data:`PLAIN`), as a baseline for ablations.
    ``extended`` lays about 40% of the records out in :data:`EXTENDED_LAYOUTS`
    (drawn per record); the others come from the default layouts. With
    ``rare_names`` a third of the extended Chinese texts name a person with a
    compound or rare family name, and name fields have more labels; without it
    the extended output is what it was before that option existed.
    ``unlabelled`` sets the share of default-layout texts given without any field
    label (the generator's own mix has a quarter); None keeps the default draws.

    Every record is checked: each non-null gold value occurs verbatim in the text,
    and the question span contains no other gold value.
    """
    if plain and extended:
        raise ValueError("plain and extended exclude each other")
    if rare_names and not extended:
        raise ValueError("rare_names applies to the extended layouts only")
    if unlabelled is not None and (plain or not 0.0 <= unlabelled <= 1.0):
        raise ValueError(f"unlabelled must be a share in [0, 1] without plain, got {unlabelled}")
    rng = random.Random(seed)
    fake = _faker(seed)
    # The extended layouts draw from a stream of their own: the default path's draws,
    # and so its output for every seed, are the same as without them.
    xrng = random.Random(f"extended:{seed}") if extended else None
    out: list[Record] = []
    while len(out) < n:
        if xrng is not None and xrng.random() < _EXTENDED_SHARE:
            record = _extended_one(xrng, fake, rare_names)
        else:
            record = _synth_one(rng, fake, plain, unlabelled)
        if record is None:
            continue
        problems = record_problems(record)
        assert not problems, f"synthetic record is invalid: {problems} in {record.text!r}"
        out.append(record)
    return out
