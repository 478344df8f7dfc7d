"""The ``contact_last`` layout: the complaint first, every contact detail at the end.
"""

from __future__ import annotations

from trainer import banks, banks_extra
from trainer.synth.draft import (
    CONTACT,
    Choices,
    Draft,
    closing_in_paragraph,
    complaint_body,
    distractor_sentences,
    draw_phone,
    join_sentences,
)


def contact_last_text(x: Choices, d: Draft) -> str | None:
    """The complaint (and maybe more sentences) first, every contact detail at the end."""
    rng = x.rng
    labelled = rng.random() < 0.6
    keys = list(CONTACT)
    if rng.random() < 0.3:
        rng.shuffle(keys)
        d.tags.append("shuffled")
    segs = [s for k in keys if (s := d.contact_seg(x, k, labelled))]
    if not segs:
        return None
    if rng.random() < 0.25:
        phone = draw_phone(rng)
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
        lone = closing_in_paragraph(x, d, banks.CLOSINGS, banks_extra.EMAIL_CLOSINGS_EN)
    head = [complaint_body(x, d, lead=0.15), *([lone] if lone else [])]
    if rng.random() < 0.3:
        head.insert(0, x.punct(x.pick(banks.GREETINGS, banks_extra.SALUTATIONS_EN)))
        d.tags.append("greeting")
    # a phone sentence is a contact detail and stands on its own line; a reference
    # number or another party's address in the story belongs to the complaint's history
    others = distractor_sentences(x, d, (0.1, 0.0, 0.0))
    breaks = banks_extra.CONTACT_BREAKS_EN if x.english else banks_extra.CONTACT_BREAKS
    brk = x.punct(rng.choice(breaks)) if joiner == "\n" or rng.random() < 0.6 else " "
    d.tags.append("labelled" if labelled else "unlabelled")
    tail = "\n" + join_sentences(others, rng) if others else ""
    return join_sentences(head, rng) + tail + brk + joiner.join(segs)
