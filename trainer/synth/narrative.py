"""The ``narrative`` layout: a first-person story that names the person and the address.
"""

from __future__ import annotations

from trainer import banks_extra
from trainer.synth.after import closing_line, status_lines, with_contact_after
from trainer.synth.draft import (
    CONTACT,
    Choices,
    Draft,
    closing_in_paragraph,
    complaint_body,
    distractor_sentences,
    join_sentences,
)


def _intro(x: Choices, d: Draft) -> str | None:
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
    return join_sentences(parts, x.rng) or None


def narrative_text(x: Choices, d: Draft) -> str:
    """A first-person story with the contact details woven into its sentences; maybe a
    contact sentence right after the complaint, then a closing line and status rows."""
    rng = x.rng
    name, address, email = (d.values[k] for k in CONTACT)
    if d.question and not x.english and rng.random() < 0.3:
        closing_in_paragraph(x, d, banks_extra.STORY_CLOSINGS, banks_extra.STORY_CLOSINGS)
    template = x.pick(banks_extra.EMAIL_SENTENCES, banks_extra.EMAIL_SENTENCES_EN)
    mail = x.fill(template, email=email) if email else d.stated_seg(x, "email", labelled=False)
    # a phone sentence is a contact detail; reference numbers belong to the story
    contact = [s for s in (mail, *distractor_sentences(x, d, (0.2, 0.0, 0.0))) if s]
    rng.shuffle(contact)
    if name and address and d.question and not x.english and rng.random() < 0.3:
        # "我叫X，住在Y，<complaint>": the complaint goes on in the intro's sentence
        intro = x.fill(rng.choice(banks_extra.INTRO_WOVEN), name=name, address=address)
        d.tags.append("woven")
        body = _after(x, d, intro + d.question)
        return _tail(x, d, join_sentences([body, *contact], rng, newline=0.1))
    body = _after(x, d, complaint_body(x, d, lead=0.25))
    who = _intro(x, d)
    roll = rng.random()
    if who and roll < 0.6:  # who and where, the story, the rest
        parts = [who, body, *contact]
    elif who and roll < 0.8:  # the story first, then who and where
        parts = [body, who, *contact]
    else:  # anywhere
        parts = [s for s in (who, *contact) if s]
        parts.insert(rng.randint(0, len(parts)), body)
    return _tail(x, d, join_sentences(parts, rng, newline=0.2))


#: Shares of the stories with a contact sentence right after the complaint, a closing
#: on a line of its own and status rows at the end (trainer.synth.after).
_CONTACT_AFTER, _CLOSING_LINE, _STATUS = 0.3, 0.2, 0.2


def _after(x: Choices, d: Draft, body: str) -> str:
    """The complaint, maybe with a contact sentence right after it."""
    return with_contact_after(x, d, body) if x.rng.random() < _CONTACT_AFTER else body


def _tail(x: Choices, d: Draft, story: str) -> str:
    """The story, maybe with a closing line (and the name under it) and status rows."""
    if x.rng.random() < _CLOSING_LINE:
        story += closing_line(x, d, story, sign=True)
    if x.rng.random() < _STATUS:
        story += status_lines(x, d)
    return story
