"""The ``mixed`` family: tickets in mixed Chinese and English.

English words and whole English sentences inside Chinese complaints, English
names (``Kevin Liu``, ``Sarah O'Neill``) and addresses written the English way
(``Room 1203, 88 Jianguo Rd, Chaoyang District, Beijing``), in one of three
layouts: a bilingual ticket form, a short message with greeting and sign-off,
and an app's feedback export (``key: value`` lines).
"""

from __future__ import annotations

import random

from trainer.fresh.common import (
    Contact,
    clean,
    digits,
    draw_contact,
    join,
    make_record,
    question_sentences,
)
from trainer.records import Record

#: The problem, code-switched, grouped by topic.
PROBLEMS: dict[str, tuple[str, ...]] = {
    "delivery": (
        "我在官网订的 noise-cancelling headphones 过了十天还没发货。",
        "The courier marked my parcel as delivered，但是我家门口什么都没有。",
        "包裹外箱被压扁了，里面的 coffee machine 摔出了一道裂缝。",
        "Tracking number 查了一个星期都显示 in transit。",
    ),
    "hotel": (
        "酒店 check-in 的时候前台说我的 booking 被取消了，可我手里还有 confirmation email。",
        "The room smelled of smoke，换房的要求被前台直接拒绝。",
        "退房时被多收了一晚的房费，receipt 上写得清清楚楚。",
    ),
    "flight": (
        "航班延误了五个小时，airline 连一份餐食都没提供。",
        "My checked luggage never arrived，行李查询台让我回家等消息。",
        "网上值机时选好的座位，登机时被莫名其妙换到了最后一排。",
    ),
    "subscription": (
        "My annual plan renewed automatically，可我早就在 settings 里关掉了 auto-renew。",
        "升级 Premium 之后，之前存的 playlist 全都不见了。",
        "I was charged in US dollars，而页面上显示的一直是人民币价格。",
    ),
    "rental": (
        "公寓的 air conditioner 坏了两周，landlord 一直说 next week 修。",
        "The deposit was supposed to come back within 30 days，现在已经过去两个月了。",
        "中介合同里没写的 management fee，每个月都在从押金里扣。",
    ),
    "gym": (
        "The gym closed without any notice，我的年卡还剩八个月。",
        "私教课的 coach 换了三次，每次都要从头开始。",
        "Locker 里的 AirPods 被偷了，前台说 CCTV 那天正好在维修。",
    ),
}
HISTORY = (
    "I already emailed your support team on {date}，到现在都没人回复。",
    "工单号 {ticket} 一直显示 pending。",
    "客服 hotline 打了{n}次都是忙音。",
    "Last time your agent promised a call-back within 24 hours, but nobody called.",
    "{day} 我在 app 里提交过 refund request，被系统自动驳回了。",
    "I have attached the receipts and photos to ticket {ticket}.",
)
REQUESTS = (
    "Please refund the full amount，不要再给我发 coupon 了。",
    "请尽快安排 replacement，or give me a full refund.",
    "I need a written explanation 和具体的处理时间。",
    "希望你们把这个 case escalate 给主管。",
    "Please get back to me by the end of this week.",
    "麻烦 double check 一下扣款记录，把多收的钱退回来。",
)
CLOSINGS = ("Thanks a lot!", "谢谢 in advance。", "Appreciate your help.")

FORM_HEADS = ("Customer Service Ticket / 客服工单 #{n}", "【Ticket {n}】", "Case No. {n} 投诉单")
FORM_LABELS = {
    "name": ("Name 姓名", "姓名 / Name", "Customer"),
    "address": ("Address 地址", "地址 / Address", "Shipping address"),
    "email": ("Email 邮箱", "邮箱 / E-mail", "Contact email"),
    "question": ("Issue 问题描述", "问题 / Issue", "Description 详情"),
}
FORM_TAILS = ("Priority 优先级: High", "Channel: web form", "Status: open / 待处理", "")
GREETINGS = ("Hi 客服，", "Hello team,", "客服你好 / Hi there,", "Hi,")
INTROS = {
    "both": ("我是 {name}，住在 {address}。", "I'm {name}, 地址是 {address}。",
             "This is {name} ({address})."),
    "name": ("我是 {name}。", "This is {name}."),
    "address": ("我住 {address}。", "My address: {address}"),
}
MAIL_LINES = ("Email: {email}", "我的邮箱 {email}", "Reply to {email} please.",
              "邮箱 / email: {email}")
ABSENT_LINES = {
    "name": ("名字就不留了。", "(name withheld)"),
    "address": ("地址不方便透露。", "No address, 线上处理就好。"),
    "email": ("No email，请电话联系。", "我不用 email。"),
}
SIGN_OFFS = ("Thanks,", "Best regards", "Cheers", "谢谢！")
EXPORT_KEYS = {
    "name": ("user_name", "real_name", "customer_name"),
    "address": ("shipping_address", "address", "addr_line"),
    "email": ("contact_email", "email", "reply_to"),
    "question": ("content", "feedback_text", "body"),
}
EXPORT_ABSENT = ("(not provided)", "-", "null", "N/A")
#: Other parties' e-mails: the team a ticket is assigned to, a cc'd shop.
OTHER_MAILS = ("ops-team@skyroute-air.com", "frontdesk@harbourview-hotel.cn",
               "billing@tunely-music.com", "leasing@urbanhome-apt.cn",
               "care@fitzone.club")  # fmt: skip


def _fill(rng: random.Random, template: str) -> str:
    date = rng.choice((f"{rng.choice(('March', 'Feb', 'Jan', 'Oct'))} {rng.randint(1, 28)}",
                       f"{rng.randint(2023, 2025)}/{rng.randint(1, 12):02d}/"
                       f"{rng.randint(1, 28):02d}"))
    day = rng.choice((date, "Last Friday", "上周五", "前两天"))
    ticket = rng.choice(("#", "TK-", "CS")) + digits(rng, rng.randint(6, 9))
    return template.format(date=date, day=day, ticket=ticket, n=rng.choice("两三四五"))


def _form(rng: random.Random, c: Contact, question: str) -> tuple[str, list[str]]:
    sep = rng.choice((": ", "：", " | "))
    lines = [rng.choice(FORM_HEADS).format(n=digits(rng, 6))]
    for key in ("name", "address", "email"):
        value = c[key] or (rng.choice(("N/A", "—", "未填")) if key in c.stated else None)
        if value is not None:
            lines.append(rng.choice(FORM_LABELS[key]) + sep + value)
    others = []
    if rng.random() < 0.25:
        others.append(rng.choice(OTHER_MAILS))
        lines.append(f"Assigned to{sep}{others[0]}")
    lines.append(rng.choice(FORM_LABELS["question"]) + sep + question)
    lines.append(rng.choice(FORM_TAILS))
    return "\n".join(x for x in lines if x), others


def _message(rng: random.Random, c: Contact, question: str) -> tuple[str, list[str]]:
    name, address, email = c["name"], c["address"], c["email"]
    lines = [rng.choice(GREETINGS)]
    if name and address:
        lines.append(rng.choice(INTROS["both"]).format(name=name, address=address))
    elif name:
        lines.append(rng.choice(INTROS["name"]).format(name=name))
    elif address:
        lines.append(rng.choice(INTROS["address"]).format(address=address))
    lines.append(question)
    others = []
    if rng.random() < 0.2:
        others.append(rng.choice(OTHER_MAILS))
        lines.append(f"cc: {others[0]}")
    if email:
        lines.append(rng.choice(MAIL_LINES).format(email=email))
    lines += [rng.choice(ABSENT_LINES[k]) for k in ("name", "address", "email") if k in c.stated]
    lines.append(rng.choice(SIGN_OFFS))
    if name and rng.random() < 0.4:
        lines.append(name)
    return "\n".join(lines), others


def _export(rng: random.Random, c: Contact, question: str) -> tuple[str, list[str]]:
    year, month, day = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    hour, minute = rng.randint(0, 23), rng.randint(0, 59)
    stamp = f"{year}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00+08:00"
    rows = [("feedback_id", digits(rng, 6)), ("submitted_at", stamp)]
    fields = []
    for key in ("name", "email", "address"):
        value = c[key] or (rng.choice(EXPORT_ABSENT) if key in c.stated else None)
        if value is not None:
            fields.append((rng.choice(EXPORT_KEYS[key]), value))
    rng.shuffle(fields)
    rows += fields
    rows.append((rng.choice(EXPORT_KEYS["question"]), question))
    version = f"{rng.randint(3, 9)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}"
    system = rng.choice(("iOS 17.4", "Android 14", "HarmonyOS 4"))
    rows.append(("app_version", f"{version} ({system})"))
    return "\n".join(f"{k}: {v}" for k, v in rows), []


def mixed_one(rng: random.Random) -> Record | None:
    """One mixed Chinese and English ticket, or None when the draw is ambiguous."""
    c = draw_contact(rng, "mixed")
    question = join(question_sentences(rng, PROBLEMS, HISTORY, REQUESTS, CLOSINGS, _fill))
    layout = rng.choice((_form, _message, _export))
    text, others = layout(rng, c, question)
    record = make_record(text, c, question, "mixed")
    return record if clean(record, others) else None
