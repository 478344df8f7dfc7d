"""The ``contact_last`` layout: the complaint first, every contact detail at the end.
"""

from __future__ import annotations

from trainer import banks, banks_extra
from trainer.synth.after import closing_line, status_lines, with_contact_after
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

#: Shares of the texts with a contact sentence right after the complaint, a closing on
#: a line of its own, and status rows (trainer.synth.after).
_CONTACT_AFTER, _CLOSING_LINE, _STATUS = 0.3, 0.2, 0.25


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
    body = join_sentences(head, rng)
    if rng.random() < _CONTACT_AFTER:  # "有事可致电…。" right after the complaint
        body = with_contact_after(x, d, body)
    tail = "\n" + join_sentences(others, rng) if others else ""
    lines = ""  # lines of their own between the complaint and the contact details
    if rng.random() < _CLOSING_LINE:  # "此致\n敬礼" or "谢谢！" on a line of its own
        lines += closing_line(x, d, body + tail, sign=False)
    status, late = "", False
    if rng.random() < _STATUS:  # "处理状态：待受理" under the complaint or at the very end
        status, late = status_lines(x, d), rng.random() < 0.5
    lines += "" if late else status
    if lines and not brk.startswith("\n"):
        brk = "\n" + brk.lstrip(" ")
    return body + tail + lines + brk + joiner.join(segs) + (status if late else "")
