"""The ``ocr`` family: a paper complaint form, filled in by hand and OCR'd.

Field labels come letter-spaced (``姓  名``, ``住　址``), colons full- or half-width,
the complaint box wrapped at the box's width, so the question holds the line
breaks the text really has, and now and then a stray space, half-width commas or
full-width digits inside it (all copied verbatim into the gold). A smudged
character or two (``■``) sits in the labels, the title or the footer, never in a
gold value. The form may name the shop complained about and its address.
"""

from __future__ import annotations

import random

from trainer.fresh import people
from trainer.fresh.common import (
    FULL_DIGITS,
    Contact,
    clean,
    digits,
    draw_contact,
    join,
    make_record,
    question_sentences,
)
from trainer.records import Record

#: The problem, written out formally by the complainant, grouped by topic.
PROBLEMS: dict[str, tuple[str, ...]] = {
    "appliance": (
        "本人在贵商场购买的滚筒洗衣机，使用不到半年便无法脱水。",
        "售后人员上门检测后称主板进水，属于人为损坏，不予保修。",
        "该洗衣机从未搬动过，也从未进水，售后的结论明显不实。",
    ),
    "decoration": (
        "装修公司施工时将我家卫生间防水层做漏，楼下邻居天花板大面积渗水。",
        "合同约定九十天完工，实际拖延至今已近半年。",
        "增项费用没有经过本人签字确认，却在结算时强行加收。",
    ),
    "prepaid": (
        "本人在该美容院办理的预付卡尚余四千余元，门店突然关门停业。",
        "店主电话已经停机，微信也将我拉黑。",
        "门口张贴的转让告示称会员权益由新店承接，新店却拒不承认。",
    ),
    "used_car": (
        "在该车行购买的二手车，合同写明无重大事故。",
        "过户后到第三方机构检测，发现车辆曾发生严重碰撞并更换过纵梁。",
        "车行以已过户为由拒绝退车，只同意补偿两千元。",
    ),
    "training": (
        "孩子报名的暑期编程班仅上课三次，机构便以场地问题为由停课。",
        "机构承诺的一对一辅导，实际是二十多人的大班。",
        "申请退费时，机构要求扣除百分之三十的违约金和教材费。",
    ),
    "clinic": (
        "本人在该口腔诊所做的种植牙，术后三个月即出现松动。",
        "诊所拒绝提供完整病历，只给了一张收费单据。",
    ),
}
HISTORY = (
    "本人曾于{date}到店交涉，店方答应一周内答复，至今未兑现。",
    "维修单号{order}，先后上门维修{n}次均未修好。",
    "{date}已拨打过商家热线，对方以负责人不在为由推脱。",
    "此前已向街道调解委员会反映，调解未果。",
    "有关付款凭证及聊天记录均已保存，可随时提交。",
)
REQUESTS = (
    "特此申请依法调解，责令商家退还全部费用。",
    "请求协调商家按照合同约定承担维修费用。",
    "恳请有关部门督促退款，维护消费者的合法权益。",
    "要求对方赔偿实际损失共计{money}元。",
    "请求责令对方限期整改，并赔礼道歉。",
)
CLOSINGS = ("望予受理为盼。", "恳请贵单位予以处理。")

TITLES = ("{city}消费者协会 投诉登记表", "消费者投诉举报登记表",
          "{district}市场监督管理局\n消费纠纷调解申请书", "物业服务投诉单（业主填写）",
          "客户意见反馈表")  # fmt: skip
NAME_LABELS = ("姓名", "投诉人", "申请人姓名")
ADDRESS_LABELS = ("住址", "家庭住址", "通讯地址")
EMAIL_LABELS = ("电子邮箱", "E-mail", "邮箱")
PHONE_LABELS = ("联系电话", "手机")
QUESTION_LABELS = ("投诉内容（请详细填写）", "投诉事由", "事实与理由", "诉求及理由", "问题描述")
SHOPS = ("华润万佳电器城", "佳美装饰工程有限公司", "悦颜美容会所", "鑫诚二手车行",
         "星火少儿编程", "德雅口腔门诊部")  # fmt: skip
ABSENT = ("________", "无", "（未填）", "／")
FOOTERS = ("第 1 页 / 共 1 页", "—— —— —— ——", "（此联由受理单位留存）",
           "受理人：____  受理日期：____", "|")  # fmt: skip
SMUDGES = "■▇□▒"


class _Labels:
    """Letter-spaced labels, with a smudged character in the ones chosen."""

    def __init__(self, rng: random.Random, keys: list[str]) -> None:
        self.rng = rng
        self.smudged = set(rng.sample(keys, rng.choice((0, 1, 1, 2))))
        self.colon = rng.choice(("：", ":", " : ", "： "))

    def __call__(self, key: str, label: str, colon: bool = True) -> str:
        rng = self.rng
        if len(label) == 2 and rng.random() < 0.6:
            label = rng.choice(("  ", " ", "\u3000")).join(label)
        elif not label.isascii() and "\n" not in label and rng.random() < 0.15:
            label = " ".join(label)
        if key in self.smudged:
            spots = [i for i, ch in enumerate(label) if not ch.isspace() and ch not in "（）\n"]
            i = rng.choice(spots)
            label = label[:i] + rng.choice(SMUDGES) + label[i + 1:]
        return label + (self.colon if colon else "")


def _noisy(rng: random.Random, question: str) -> str:
    """The complaint as the OCR read it: half-width commas, full-width digits, a stray space."""
    if rng.random() < 0.25:
        question = "".join("," if ch == "，" and rng.random() < 0.5 else ch for ch in question)
    if rng.random() < 0.2:
        question = question.translate(FULL_DIGITS)
    if rng.random() < 0.12:
        i = rng.randint(1, len(question) - 2)
        question = question[:i] + " " + question[i:]
    return question


def _wrap(text: str, width: int, first: int) -> str:
    """``text`` broken into lines of ``width`` characters, the first of ``first``."""
    lines = [text[:first]]
    rest = text[first:]
    while rest:
        lines.append(rest[:width])
        rest = rest[width:]
    return "\n".join(x for x in lines if x)


def _shop_address(rng: random.Random) -> str:
    _, city, districts, roads = rng.choice(people.CITIES)
    return (f"{city}{rng.choice(districts)}{rng.choice(roads)}{rng.randint(1, 400)}号"
            f"{rng.choice(('', '一楼', '二层', 'B1层'))}")


def _fill(rng: random.Random, template: str) -> str:
    date = rng.choice((f"{rng.randint(2023, 2025)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
                       f"{rng.randint(1, 12)}月{rng.randint(1, 28)}日"))
    order = rng.choice(("WX", "SH", "")) + digits(rng, rng.randint(8, 12))
    return template.format(date=date, order=order, n=rng.choice("两三四"),
                           money=rng.choice(("3800", "12600", "八千", "两万一千五百")))


def _value(rng: random.Random, c: Contact, key: str) -> str | None:
    value = c[key]
    if value is None and key in c.stated:
        return rng.choice(ABSENT)
    return value


def ocr_one(rng: random.Random) -> Record | None:
    """One OCR'd complaint form, or None when the draw is ambiguous."""
    c = draw_contact(rng, "zh")
    address = c["address"]
    if address and rng.random() < 0.2:  # handwritten digits read as full-width
        c.values["address"] = address.translate(FULL_DIGITS)
    question = _noisy(rng, join(question_sentences(rng, PROBLEMS, HISTORY, REQUESTS, CLOSINGS,
                                                   _fill)))
    lab = _Labels(rng, ["title", "name", "address", "email", "phone", "question", "footer"])
    _, city, districts, _ = rng.choice(people.CITIES)
    title = rng.choice(TITLES).format(city=city, district=rng.choice(districts))
    title = lab("title", title, colon=False)
    lines = [title]
    if rng.random() < 0.5:
        lines.append(f"编号{lab.colon}No.{digits(rng, 7)}")
    name = _value(rng, c, "name")
    if name is not None:
        line = lab("name", rng.choice(NAME_LABELS)) + name
        if rng.random() < 0.5:
            line += " " * rng.randint(3, 8) + f"性别{lab.colon}{rng.choice('男女')}"
        lines.append(line)
    phone = rng.choice(("13", "15", "18")) + digits(rng, 9)
    if rng.random() < 0.3:
        phone = phone.translate(FULL_DIGITS)
    if rng.random() < 0.7:
        lines.append(lab("phone", rng.choice(PHONE_LABELS)) + phone)
    for key, labels in (("address", ADDRESS_LABELS), ("email", EMAIL_LABELS)):
        value = _value(rng, c, key)
        if value is not None:
            lines.append(lab(key, rng.choice(labels)) + value)
    others = []
    if rng.random() < 0.4:
        shop, where = rng.choice(SHOPS), _shop_address(rng)
        others.append(where)
        lines += [f"被投诉方{lab.colon}{shop}", f"被投诉方地址{lab.colon}{where}"]
    label = lab("question", rng.choice(QUESTION_LABELS))
    if rng.random() < 0.7:  # wrapped at the width of the box
        width = rng.randint(14, 26)
        same_line = rng.random() < 0.5
        first = max(4, width - len(label)) if same_line else width
        wrapped = _wrap(question, width, first)
        question = wrapped
        lines.append(label + wrapped if same_line else label + "\n" + wrapped)
    else:
        lines.append(label + question)
    signer = c["name"] if c["name"] and rng.random() < 0.4 else "________"
    lines.append(f"投诉人（签字）{lab.colon}{signer}")
    year, month, day = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    lines.append(rng.choice((f"日期：{year} 年 {month} 月 {day} 日", f"{year}年{month}月{day}日")))
    if rng.random() < 0.6:
        lines.append(lab("footer", rng.choice(FOOTERS), colon=False))
    record = make_record("\n".join(lines), c, question, "ocr")
    return record if clean(record, others) else None
