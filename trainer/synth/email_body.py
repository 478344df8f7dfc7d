"""The ``email_body`` layout: headers, a subject, a salutation, the body and a signature.
"""

from __future__ import annotations

from trainer import banks_extra
from trainer.synth.after import closing_line, status_lines, with_contact_after
from trainer.synth.common import draw_date
from trainer.synth.draft import (
    CONTACT,
    NOISE_EMAILS,
    Choices,
    Draft,
    complaint_body,
    distractor_sentences,
    join_sentences,
)

#: Shares of the e-mails with a contact sentence right after the complaint, a closing
#: line of its own before the signature, and status rows under it (trainer.synth.after).
_CONTACT_AFTER, _CLOSING_LINE, _STATUS = 0.25, 0.2, 0.2


def _signature(x: Choices, d: Draft, email_shown: bool, closed: bool) -> str:
    """The sign-off and signature block of an e-mail, in one of several forms; no
    sign-off line when the e-mail is ``closed`` already ("谢谢！" on a line above)."""
    rng = x.rng
    name, address, email = (d.values[k] for k in CONTACT)
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
    for key in CONTACT:
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
    if opener and closed:
        opener = None
    elif opener:
        d.tags.append("closing_line")
    if rng.random() < 0.3 and not x.english:
        lines.append(draw_date(rng))
    return "\n".join([*([opener] if opener else []), *lines])


def email_text(x: Choices, d: Draft) -> str:
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
            other = rng.choice(NOISE_EMAILS)
            lines.append(rng.choice(banks_extra.TO_LINES).format(other=other))
            d.tags.append("distractor_email")
            d.noise.append(lines[-1])
        if rng.random() < 0.3:
            lines.append(rng.choice(banks_extra.DATE_LINES).format(date=draw_date(rng)))
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
    body = indent + complaint_body(x, d, lead=0.2)
    if rng.random() < _CONTACT_AFTER:  # "有事可致电…。" right after the complaint
        body = with_contact_after(x, d, body)
    lines.append(body)
    others = distractor_sentences(x, d, (0.2, 0.0, 0.0))  # as in contact_last_text
    if others:  # on a line of their own: not part of the complaint paragraph
        lines.append(join_sentences(others, rng))
    if rng.random() < 0.5:
        lines.append(x.punct(x.pick(banks_extra.EMAIL_CLOSINGS, banks_extra.EMAIL_CLOSINGS_EN)))
        d.tags.append("closing")
    closed = rng.random() < _CLOSING_LINE
    text = "\n".join(lines)
    text += closing_line(x, d, text, sign=False) if closed else ""
    signature = _signature(x, d, email_shown, closed)
    if signature:
        text += "\n" + signature
    if rng.random() < _STATUS:  # "来源：邮件\n处理状态：待受理" under the e-mail
        text += status_lines(x, d)
    if rng.random() < 0.15:
        tail = rng.choice(banks_extra.QUOTED_REPLIES + banks_extra.AGENT_SIGNATURES)
        other = rng.choice(NOISE_EMAILS)
        text += tail.format(other=other)
        d.tags.append("distractor_email")
        d.noise.append(other)
    return text
