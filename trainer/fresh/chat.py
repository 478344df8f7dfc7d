"""The ``chat`` family: an exported customer-service chat, with timestamps.

The customer states the whole complaint in one turn; that turn's text, less a
greeting in front, is the question. Name, address and e-mail come in later (or
earlier) turns, when the agent asks for them, or are declined.
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

#: The problem, colloquial and first person, grouped by topic.
PROBLEMS: dict[str, tuple[str, ...]] = {
    "takeout": (
        "我点的外卖超时一个多小时才送到，饭菜全凉透了。",
        "骑手把餐放在小区门口就走了，打他电话也不接。",
        "订单里的饮料少送了一杯，商家却说早就出餐了。",
        "外卖盒里吃出了一根头发，拍了照片商家不认账。",
        "明明备注了不要香菜，送来的面里全是香菜。",
    ),
    "ride": (
        "昨晚打的网约车绕了一大圈路，车费比平时多出四十块。",
        "司机到了上车点不等我，直接点了乘客已上车。",
        "行程结束后又多扣了一笔高速费，可全程根本没走高速。",
        "我的雨伞落在车上了，联系司机一直联系不上。",
    ),
    "travel": (
        "在你们APP上订的民宿，到了现场房东说房子早就不对外租了。",
        "机票改签时页面显示免费，提交后却扣了三百二的手续费。",
        "酒店详情页写的是海景房，实际窗外是一堵墙。",
        "订的景区门票过闸机时提示无效，只好现场又买了一张。",
    ),
    "membership": (
        "我的会员到期前一天被自动续了一年，我从来没开过连续包年。",
        "充值的游戏点券显示成功，可账户余额一直是零。",
        "点了取消订阅之后，第二个月照样扣了我二十五。",
        "买的网课视频一半都打不开，一直在转圈加载。",
    ),
    "shopping": (
        "收到的羽绒服袖口开线了，吊牌都没拆就是不给退。",
        "详情页写着原装正品，到手的充电器明显是山寨货。",
        "申请仅退款三天了，商家那边一直显示待处理。",
        "我付款第二天这件商品就降了一百多，说好的价保不认。",
        "快递柜的取件码收到了，可柜门打开是空的。",
    ),
}
#: Earlier attempts; ``{date}``, ``{order}`` and ``{n}`` are drawn.
HISTORY = (
    "{date}我已经在这里问过一次，当时说会加急处理。",
    "售后单{order}提交到现在，状态一直没变过。",
    "我前后打了{n}次电话，每次都让我等通知。",
    "上次的客服说二十四小时内回我，结果一点消息都没有。",
    "订单号是{order}，你们后台应该能查到。",
    "截图我{date}就发给商家了，到现在都没回。",
    "之前机器人客服给了我一个链接，点进去是空白页。",
    "这已经是我这个月第{n}回碰到这种事了。",
)
REQUESTS = (
    "你们能不能直接给我退款？",
    "麻烦今天之内给我一个说法。",
    "我要求全额退款，不接受优惠券补偿。",
    "请帮我转给主管处理一下。",
    "希望平台出面核实，别再让我自己跟商家扯皮了。",
    "多扣的钱请原路退回来。",
    "能不能安排重新发一份？",
    "这事你们平台必须给我个交代。",
)
CLOSINGS = ("麻烦尽快处理哈。", "辛苦帮我跟进一下。", "在线等你们回复。", "拜托快一点吧。")

AGENT_OPEN = (
    "您好，很高兴为您服务，请问有什么可以帮您？",
    "亲，在的哦，请问遇到什么问题了呢？",
    "您好，人工客服为您服务，请描述一下您的问题。",
)
ASK_PROBLEM = "好的，请问遇到了什么问题？"
USER_HELLO = ("在吗？", "你好，有人吗", "人工客服", "转人工")
#: In front of the complaint in its turn: a greeting, never part of the question.
GREETINGS = ("你好，", "您好，", "客服你好，", "你好客服，")
SORRY = ("非常抱歉给您带来不好的体验。", "理解您的心情，这边马上为您核实。",
         "抱歉让您久等了，我这边帮您登记一下。")  # fmt: skip
ASK = {
    "name": ("麻烦提供一下您的姓名，方便登记。", "请问您怎么称呼？", "请留一下您的真实姓名。"),
    "address": ("请问您的联系地址是？", "麻烦发一下您的详细地址。", "上门的话地址是哪里呢？"),
    "email": ("方便留一个邮箱吗？处理结果会发到邮箱。", "请提供一下接收回执的邮箱。",
              "邮箱方便留一下吗？"),
}
REPLY = {
    "name": ("{v}", "我叫{v}", "姓名{v}", "{v}。"),
    "address": ("{v}", "地址是{v}", "{v}，白天家里有人", "寄到{v}就行"),
    "email": ("{v}", "邮箱是{v}", "发{v}吧", "{v} 这个"),
}
DECLINE = {
    "name": ("名字就不用留了吧", "姓名不方便说"),
    "address": ("地址不方便给", "地址就不发了，先线上处理吧"),
    "email": ("我没有邮箱，短信通知就行", "邮箱不用了"),
}
BOTH = ("{name}，{address}", "{name} {address}", "我叫{name}，住{address}")
ASK_BOTH = ("麻烦留一下姓名和地址。", "请提供您的姓名和联系地址。")
CONFIRM = (
    "好的，已为您提交加急工单{ticket}，{n}个工作日内会有专员联系您。",
    "已登记，工单号{ticket}，处理进度可以在APP里查看。",
    "收到，这边已经反馈给相关部门，请您留意回电。",
)
#: Another party's e-mail the agent gives: never the customer's.
SHOP_MAILS = ("cs@lemonmall.cn", "shouhou@juhe-dianqi.com", "kf-team@xiaoyu-travel.cn",
              "help@qingche-ride.com", "vip@haowei-waimai.cn")  # fmt: skip
SHOP_MAIL_LINES = ("补充材料也可以发到{other}。", "凭证可以发送至{other}，我们会尽快审核。")
USER_BYE = ("好的", "行，等你们消息", "谢谢", "尽快吧", "嗯")
AGENT_BYE = ("请问还有其他可以帮您的吗？", "感谢您的耐心，祝您生活愉快。")
#: Longer transcripts are drawn again (about 900 tokens of prompt and answer in all).
MAX_CHARS = 460
SPEAKERS = (("客服", "用户"), ("在线客服-小满", "顾客"), ("售后专员 阿杰", "买家"),
            ("人工客服", "客户"), ("客服小桔", "会员"))  # fmt: skip
HEADERS = ("—— 在线咨询记录 {day} ——", "会话编号：{sid}", "以下为聊天记录导出（{day}）", "")
FOOTERS = ("—— 会话结束 ——", "[系统] 用户已评价：不满意", "[系统] 会话已超时关闭", "")


def _fill(rng: random.Random, template: str) -> str:
    date = rng.choice((f"{rng.randint(1, 12)}月{rng.randint(1, 28)}号", "上周三", "前天",
                       f"{rng.randint(1, 12)}/{rng.randint(1, 28)}"))
    order = rng.choice(("", "", "E", "SH")) + digits(rng, rng.randint(12, 18))
    return template.format(date=date, order=order, n=rng.choice("两三四五"))


def _contact_turns(rng: random.Random, c: Contact) -> list[tuple[str, str]]:
    """The agent's questions and the customer's answers for name, address, e-mail."""
    turns: list[tuple[str, str]] = []
    keys = ["name", "address", "email"]
    if c["name"] and c["address"] and rng.random() < 0.25:
        turns += [("a", rng.choice(ASK_BOTH)),
                  ("u", rng.choice(BOTH).format(name=c["name"], address=c["address"]))]
        keys = ["email"]
    elif rng.random() < 0.3:
        keys = ["name", "email", "address"]
    for key in keys:
        value = c[key]
        if value is not None:
            turns += [("a", rng.choice(ASK[key])), ("u", rng.choice(REPLY[key]).format(v=value))]
        elif key in c.stated:
            turns += [("a", rng.choice(ASK[key])), ("u", rng.choice(DECLINE[key]))]
    return turns


def _render(rng: random.Random, turns: list[tuple[str, str]]) -> str:
    agent, user = rng.choice(SPEAKERS)
    year, month, day = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    clock = rng.randint(8 * 3600, 22 * 3600)
    style = rng.randrange(4)
    lines = []
    for who, said in turns:
        clock += rng.randint(4, 150)
        hms = f"{clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}"
        speaker = agent if who == "a" else user
        if style == 0:
            lines.append(f"[{hms}] {speaker}：{said}")
        elif style == 1:
            lines.append(f"{speaker} {hms}\n{said}")
        elif style == 2:
            lines.append(f"{hms[:5]} {speaker}: {said}")
        else:
            lines.append(f"{speaker}（{hms}）：{said}")
    day_text = f"{year}-{month:02d}-{day:02d}"
    header = rng.choice(HEADERS).format(day=day_text, sid=digits(rng, 10))
    footer = rng.choice(FOOTERS)
    return "\n".join(x for x in (header, *lines, footer) if x)


def chat_one(rng: random.Random) -> Record | None:
    """One chat transcript, or None when the draw is ambiguous."""
    c = draw_contact(rng, "zh")
    question = join(question_sentences(rng, PROBLEMS, HISTORY, REQUESTS, CLOSINGS, _fill))
    said = (rng.choice(GREETINGS) if rng.random() < 0.25 else "") + question
    turns: list[tuple[str, str]] = []
    if rng.random() < 0.5:
        turns.append(("a", rng.choice(AGENT_OPEN)))
    if rng.random() < 0.3:
        turns.insert(0, ("u", rng.choice(USER_HELLO)))
    details = _contact_turns(rng, c)
    if details and rng.random() < 0.25:  # details first, then the complaint
        turns += [*details, ("a", ASK_PROBLEM), ("u", said), ("a", rng.choice(SORRY))]
    else:
        turns += [("u", said), ("a", rng.choice(SORRY)), *details]
    others = []
    if rng.random() < 0.25:
        other = rng.choice(SHOP_MAILS)
        others.append(other)
        turns.append(("a", rng.choice(SHOP_MAIL_LINES).format(other=other)))
    ticket = "CS" + digits(rng, 12)
    turns.append(("a", rng.choice(CONFIRM).format(ticket=ticket, n=rng.choice("123"))))
    if rng.random() < 0.4:
        turns.append(("u", rng.choice(USER_BYE)))
    if rng.random() < 0.25:
        turns.append(("a", rng.choice(AGENT_BYE)))
    text = _render(rng, turns)
    if len(text) > MAX_CHARS:  # a model's prompt has room for about this much
        return None
    record = make_record(text, c, question, "chat")
    return record if clean(record, others) else None
