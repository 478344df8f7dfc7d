"""The ``callnote`` family: a call-centre agent's notes on one call.

Header and meta lines in the agent's shorthand (time, seat, 工单号, the number
called from), the caller's details in note form, then the complaint as reported
speech in one paragraph after a label (the label is not part of the question),
then what the agent did. The seat may carry the agent's own name.
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

#: The problem as the agent reports it; ``{who}`` is how the note names the caller.
PROBLEMS: dict[str, tuple[str, ...]] = {
    "water": (
        "{who}反映其家中水表近两个月读数异常，用水量比往年同期多出一倍。",
        "{who}称所在楼栋的二次供水水箱长期未清洗，水里有明显沉淀。",
        "{who}表示小区凌晨常常无故停水，事前没有任何公告。",
    ),
    "property": (
        "{who}称小区电梯一周内困人两次，物业只派了保安到场。",
        "{who}反映楼下商铺深夜装修噪音扰民，物业以无权管理为由推脱。",
        "{who}表示物业擅自把绿化带改成收费车位，业主大会并未表决。",
        "{who}称地下室返潮积水，存放的家具已经发霉。",
    ),
    "bank": (
        "{who}表示信用卡被扣了一笔境外消费，本人近年从未出境。",
        "{who}反映银行卡被冻结后，网点要求其提供各种流水证明才给解冻。",
        "{who}称分期手续费与办理时业务员口头承诺的不一致。",
    ),
    "telecom": (
        "{who}反映家中固话被停机，营业厅称系欠费，但其账户一直有余额。",
        "{who}称被营业员误导办理了带宽升级，每月多交六十元。",
        "{who}表示手机号被开通了多项增值业务，本人毫不知情。",
    ),
    "transit": (
        "{who}反映公交卡充值后刷卡仍提示余额不足。",
        "{who}称地铁闸机多扣了两次车费，站务员让其自行网上申诉。",
        "{who}表示夜班公交近一个月经常不按时刻表发车。",
    ),
    "insurance": (
        "{who}表示理赔材料递交已满四十天，保险公司未给出任何结论。",
        "{who}称续保时保费上涨近一倍，客服无法说明原因。",
        "{who}反映车辆出险后定损员迟迟不到场，拖车费用只能自付。",
    ),
}
HISTORY = (
    "{who}称{date}已就此事来电一次，当时答复三个工作日内处理。",
    "{who}表示此前工单{order}已被标记为办结，但问题依旧。",
    "据{who}描述，前后已向相关单位反映{n}次。",
    "{who}称曾到营业网点现场办理，被告知还需再等一周。",
    "{who}称{date}有工作人员上门查看，此后再无下文。",
    "{who}表示已通过官方公众号留言，编号{order}，一直没有回复。",
)
REQUESTS = (
    "{who}要求尽快派员上门核查。",
    "{who}要求退还多扣款项并给出书面说明。",
    "{who}希望相关部门督促整改，并在一周内回复处理结果。",
    "{who}要求更换经办人员，不接受继续拖延。",
    "{who}希望有关单位给出明确的解决时限。",
    "{who}要求按合同约定赔偿由此造成的损失。",
)
CLOSINGS = ("{who}最后表示辛苦工作人员跟进。", "{who}表示盼早日得到答复。")
WHO = ("来电人", "客户", "该用户", "市民")

HEADERS = ("【来电记录】", "来电记录", "=== 热线来电记录 ===", "[来电登记]", "来电小记")
QUESTION_LABELS = ("来电内容：", "主诉：", "内容摘要：", "事由简述：", "来电反映：")
HANDLING = (
    "处理：已致歉，转二线跟进，48h内回访。",
    "处理意见：已登记，派单至{dept}。",
    "结果：告知客户三个工作日内答复，客户表示接受。",
    "处理：已安抚，升级至{dept}，待回访。",
    "已派单{dept}，cx要求结果短信告知。",
)
DEPTS = ("二线投诉组", "属地营业厅", "物业监管科", "理赔中心", "运营调度组", "信用卡中心")
REMARKS = (
    "备注：重复来电（第{n}次）。",
    "备注：情绪激动，已安抚。",
    "备注：要求回访前先发短信。",
    "备注：cx态度尚可，需跟进。",
    "备注：无",
    "",
)
#: The agent's own full names: never the caller's.
AGENT_NAMES = ("冯晓岚", "孔令瑜", "贝佳琪", "应子健", "殷书灵", "喻天成")
LABELS = {
    "name": ("来电人：", "姓名：", "客户："),
    "address": ("地址：", "住址：", "联系地址："),
    "email": ("邮箱：", "E-mail：", "电邮："),
}
ABSENT = {
    "name": ("未告知", "不愿透露"),
    "address": ("客户不愿透露", "未留"),
    "email": ("未提供", "无（客户称不用邮箱）"),
}
INLINE = {"name": "姓名{v}", "address": "住{v}", "email": "邮箱{v}"}


def _fill(rng: random.Random, template: str, who: str = "来电人") -> str:
    date = rng.choice((f"{rng.randint(1, 12)}月{rng.randint(1, 28)}日", "上周五", "本月初",
                       f"{rng.randint(2023, 2025)}.{rng.randint(1, 12)}.{rng.randint(1, 28)}"))
    order = rng.choice(("GD", "TS", "WX", "")) + digits(rng, rng.randint(10, 14))
    return template.format(who=who, date=date, order=order, n=rng.choice("两三四五"))


def _details(rng: random.Random, c: Contact) -> list[str]:
    """The caller's details in note form: a line each, or all on one line."""
    keys = ["name", "address", "email"]
    style = rng.randrange(3)
    if style == 0:
        lines = []
        for key in keys:
            value = c[key] or (rng.choice(ABSENT[key]) if key in c.stated else None)
            if value is not None:
                lines.append(rng.choice(LABELS[key]) + value)
        return lines
    sep = rng.choice((" / ", "；", " | ", "，"))
    if style == 1:
        parts = []
        for key in keys:
            value = c[key] or (rng.choice(ABSENT[key]) if key in c.stated else None)
            if value is not None:
                parts.append(rng.choice(LABELS[key]).rstrip("：") + " " + value)
        return [("客户信息：" if rng.random() < 0.5 else "") + sep.join(parts)] if parts else []
    parts = [INLINE[k].format(v=c[k]) for k in keys if c[k]]
    if not parts:
        return []
    checked = rng.choice(("（已复述确认）", "（口述）", ""))
    return [sep.join(parts) + checked]


def callnote_one(rng: random.Random) -> Record | None:
    """One call note, or None when the draw is ambiguous."""
    c = draw_contact(rng, "zh")
    who = rng.choice(WHO)

    def fill(r: random.Random, template: str) -> str:
        return _fill(r, template, who)

    question = join(question_sentences(rng, PROBLEMS, HISTORY, REQUESTS, CLOSINGS, fill))
    year, month, day = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    when = f"{year}-{month:02d}-{day:02d} {rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}"
    seat = f"{rng.choice('ABK')}{digits(rng, 4)}"
    agent = rng.choice(AGENT_NAMES) if rng.random() < 0.3 else ""
    ticket = rng.choice(("RX", "WD", "12345-")) + f"{year % 100}{month:02d}{day:02d}"
    ticket += digits(rng, 4)
    phone = rng.choice(("13", "15", "18", "17")) + digits(rng, 1)
    phone += rng.choice(("****", digits(rng, 4))) + digits(rng, 4)
    meta = [f"来电时间：{when}", f"坐席：{seat}" + (f" {agent}" if agent else ""),
            f"来电号码：{phone}", "类型：" + rng.choice(("投诉", "报修", "咨询转投诉"))]
    if rng.random() < 0.4:  # shorthand: one line
        seat_text = f"坐席{seat}" + (f"（{agent}）" if agent else "")
        meta = [" | ".join((when, seat_text, f"工单{ticket}"))]
    else:
        rng.shuffle(meta)
        meta = meta[: rng.randint(2, 4)]
        meta.insert(rng.randint(0, len(meta)), f"工单号：{ticket}")
        if agent and not any(agent in m for m in meta):
            meta.append(f"受理人：{agent}")
    label = rng.choice(QUESTION_LABELS)
    body = label + ("\n" if rng.random() < 0.35 else "") + question
    details = _details(rng, c)
    dept = rng.choice(DEPTS)
    after = [rng.choice(HANDLING).format(dept=dept),
             rng.choice(REMARKS).format(n=rng.choice("二三四"))]
    if rng.random() < 0.3:  # the details after the complaint, as the agent took them down
        lines = [rng.choice(HEADERS), *meta, body, *details, *after]
    else:
        lines = [rng.choice(HEADERS), *meta, *details, body, *after]
    record = make_record("\n".join(x for x in lines if x), c, question, "callnote")
    return record if clean(record, [agent] if agent else []) else None
