"""What the fresh families share: drawn contacts, the question's sentences and how
they are glued, and the check that a drawn ticket is unambiguous.

Nothing here comes from trainer.banks, trainer.banks_extra or Faker: names,
addresses and e-mails are composed from the lists in :mod:`trainer.fresh.people`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trainer.fresh import people
from trainer.records import Gold, Record, record_problems

#: Chance that each of name, address and e-mail is null (the question never is).
MISSING_RATE = 0.15
#: Of the null fields, the share the text says are absent ("没有邮箱"); the rest are left out.
STATED_RATE = 0.5
CONTACT = ("name", "address", "email")
#: At most this many sentences in a question.
MAX_SENTENCES = 6

Filler = Callable[[random.Random, str], str]


@dataclass
class Contact:
    """A complainant's drawn details; ``stated`` holds the null fields the text
    says are absent (the others are simply left out)."""

    values: dict[str, str | None]
    stated: set[str] = field(default_factory=set)

    def __getitem__(self, key: str) -> str | None:
        return self.values[key]


def draw_contact(rng: random.Random, style: str) -> Contact:
    """A contact in ``style`` ``"zh"`` (Chinese), ``"en"`` (English name and address
    as foreigners and expats write them) or ``"mixed"`` (either, per field)."""
    english_name = style == "en" or (style == "mixed" and rng.random() < 0.75)
    english_address = style == "en" or (style == "mixed" and rng.random() < 0.7)
    person = people.english_person(rng) if english_name else people.chinese_person(rng)
    values: dict[str, str | None] = {
        "name": person.name,
        "address": people.english_address(rng) if english_address
        else people.chinese_address(rng),
        "email": people.email(rng, person),
    }
    stated = set()
    for key in CONTACT:
        if rng.random() < MISSING_RATE:
            values[key] = None
            if rng.random() < STATED_RATE:
                stated.add(key)
    return Contact(values, stated)


def question_sentences(rng: random.Random, problems: dict[str, tuple[str, ...]],
                       history: Sequence[str], requests: Sequence[str],
                       closings: Sequence[str], fill: Filler) -> list[str]:
    """A complaint's sentences: one or two problems of one topic, in their bank
    order, maybe one or two history sentences, usually a request, sometimes a
    closing; 2 to :data:`MAX_SENTENCES` in all."""
    group = problems[rng.choice(sorted(problems))]
    start = 0 if rng.random() < 0.5 else rng.randrange(len(group))
    picked = list(group[start:start + rng.choice((1, 1, 2))])
    past = [fill(rng, t) for t in rng.sample(list(history), rng.choice((0, 0, 1, 1, 1, 2)))]
    tail = [fill(rng, rng.choice(requests))] if rng.random() < 0.85 else []
    tail += [fill(rng, rng.choice(closings))] if rng.random() < 0.25 else []
    while len(picked) + len(past) + len(tail) > MAX_SENTENCES:
        past.pop()
    if len(picked) + len(past) + len(tail) < 2:
        tail.insert(0, fill(rng, rng.choice(requests)))
    if past and rng.random() < 0.2:  # the story may begin with its history
        return [past[0], *[fill(rng, s) for s in picked], *past[1:], *tail]
    return [*[fill(rng, s) for s in picked], *past, *tail]


def join(sentences: Sequence[str]) -> str:
    """Sentences as one paragraph: nothing after a full-width end, a space after a
    half-width one (English)."""
    out = ""
    for s in sentences:
        if out:
            out += "" if out[-1] in "。！？" else " "
        out += s
    return out


def clean(record: Record, others: Sequence[str] = ()) -> bool:
    """Whether a drawn ticket is usable: every gold value grounded, no contact value
    inside the question or inside another, and no other party's detail
    (``others``: agents, shops, cc'd addresses) equal to, inside or around a gold value."""
    if record_problems(record):
        return False
    gold = record.gold
    question = gold["question"] or ""
    values = [v for k in CONTACT if (v := gold[k])]
    if any(v in question for v in values):
        return False
    if any(a != b and a in b for a in values for b in values):
        return False
    return not any(o and (o in v or v in o) for o in others for v in values)


def make_record(text: str, contact: Contact, question: str, family: str) -> Record:
    gold: Gold = {**contact.values, "question": question}
    return Record(text, gold, [family, "fresh"])


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


FULL_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
