"""Helpers every layout family shares: Faker, digits, contact values, the question's
sentences and how they are glued, and the check that golds are unambiguous.
"""

from __future__ import annotations

import random
from typing import Any

from trainer import banks, banks_extra
from trainer.records import Record

HALF = str.maketrans(banks.HALF_WIDTH)
ENDS = "。！？!?"
_FAKER: list[Any] = []


def faker(seed: int) -> Any:
    """The shared zh_CN Faker, seeded with ``seed`` (one instance: building it is slow)."""
    if not _FAKER:
        from faker import Faker

        _FAKER.append(Faker("zh_CN"))
    _FAKER[0].seed_instance(seed)
    return _FAKER[0]


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def draw_email(rng: random.Random, fake: Any) -> tuple[str, str]:
    kind = rng.choice(("faker", "faker", "free", "pinyin", "qq"))
    domain = rng.choice(banks.FREE_MAIL_DOMAINS)
    if kind == "faker":
        return fake.email(), "email_faker"
    if kind == "free":
        return f"{fake.user_name()}@{domain}", "email_free"
    if kind == "qq":
        return f"{rng.randint(1, 9)}{digits(rng, rng.randint(5, 9))}@qq.com", "email_qq"
    given, family = fake.romanized_name().lower().split(" ", 1)
    user = rng.choice((f"{family}{given}", f"{given}.{family}", f"{family}_{given}"))
    return f"{user}{rng.choice(('', digits(rng, 2), digits(rng, 4)))}@{domain}", "email_pinyin"


def draw_address(rng: random.Random, fake: Any) -> str:
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
        date=draw_date(rng), order=order_number(rng), times=rng.choice(banks_extra.TIMES),
        times_en=rng.choice(banks_extra.TIMES_EN), code=digits(rng, rng.randint(3, 5)),
        brand=rng.choice(banks_extra.QUOTE_BRANDS),
        status=rng.choice(banks_extra.QUOTE_STATUSES),
        status_en=rng.choice(banks_extra.QUOTE_STATUSES_EN),
    )


def complaint_sentences(rng: random.Random, problems: list[str],
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


def glue(pieces: list[str], rng: random.Random, breaks: str, closing: str | None) -> str:
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


def quote_tags(question: str | None) -> list[str]:
    return ["quotes"] if question and ('"' in question or "\\" in question) else []


def is_clean(r: Record) -> bool:
    """No gold value inside the question or another party's email, so golds are unambiguous."""
    q, email = r.gold["question"] or "", r.gold["email"] or ""
    others = [v for k in ("name", "address", "email") if (v := r.gold[k])]
    clash = bool(email) and any(email in o or o in email for o in banks.OTHER_EMAILS)
    return not clash and not any(v in q for v in others)


def order_number(rng: random.Random) -> str:
    return rng.choice(("", "", "GD", "SF", "JD", "WO-")) + digits(rng, rng.randint(10, 16))


def draw_date(rng: random.Random) -> str:
    m, d = rng.randint(1, 12), rng.randint(1, 28)
    if rng.random() < 0.5:
        return f"{rng.randint(2022, 2025)}年{m}月{d}日"
    hour, minute = rng.randint(8, 21), rng.randint(0, 59)
    return f"{rng.randint(2022, 2025)}-{m:02d}-{d:02d} {hour:02d}:{minute:02d}"
