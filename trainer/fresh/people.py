"""Names, addresses and e-mails for the fresh tickets (pure data and small draws).

Written for these tickets only: no Faker, nothing from trainer.banks or
trainer.banks_extra. Chinese names carry their pinyin so that an e-mail can be
built from the name the way people build theirs (``zhongmuyang88@189.cn``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: (family name, pinyin): a few of the commonest and many that Faker seldom draws.
SURNAMES: tuple[tuple[str, str], ...] = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
    ("杨", "yang"), ("黄", "huang"), ("周", "zhou"), ("钟", "zhong"), ("邱", "qiu"),
    ("符", "fu"), ("温", "wen"), ("蒋", "jiang"), ("韦", "wei"), ("覃", "qin"),
    ("黎", "li"), ("龚", "gong"), ("屈", "qu"), ("甘", "gan"), ("涂", "tu"),
    ("聂", "nie"), ("阎", "yan"), ("伍", "wu"), ("柯", "ke"), ("岳", "yue"),
    ("卓", "zhuo"), ("葛", "ge"), ("谭", "tan"), ("邹", "zou"), ("翟", "zhai"),
    ("项", "xiang"), ("房", "fang"), ("童", "tong"), ("宁", "ning"), ("戚", "qi"),
    ("茅", "mao"), ("池", "chi"), ("练", "lian"), ("麦", "mai"), ("冼", "xian"),
    ("鲍", "bao"), ("米", "mi"), ("牛", "niu"), ("欧阳", "ouyang"), ("司马", "sima"),
)  # fmt: skip
#: (given name, pinyin): names of young people, of their parents' generation, and single ones.
GIVEN: tuple[tuple[str, str], ...] = (
    ("沐阳", "muyang"), ("一诺", "yinuo"), ("梓涵", "zihan"), ("子墨", "zimo"),
    ("若彤", "ruotong"), ("思齐", "siqi"), ("语嫣", "yuyan"), ("浩宇", "haoyu"),
    ("欣怡", "xinyi"), ("俊熙", "junxi"), ("雨桐", "yutong"), ("皓轩", "haoxuan"),
    ("嘉懿", "jiayi"), ("安琪", "anqi"), ("承泽", "chengze"), ("知夏", "zhixia"),
    ("建国", "jianguo"), ("桂芬", "guifen"), ("秀兰", "xiulan"), ("志强", "zhiqiang"),
    ("红梅", "hongmei"), ("国庆", "guoqing"), ("淑珍", "shuzhen"), ("德胜", "desheng"),
    ("玉梅", "yumei"), ("振华", "zhenhua"), ("丽娟", "lijuan"), ("卫东", "weidong"),
    ("海燕", "haiyan"), ("春生", "chunsheng"), ("凤英", "fengying"), ("宝山", "baoshan"),
    ("磊", "lei"), ("静", "jing"), ("敏", "min"), ("洋", "yang"), ("婷", "ting"),
    ("涛", "tao"), ("蕾", "lei"), ("峥", "zheng"), ("琦", "qi"), ("昊", "hao"),
)  # fmt: skip
#: English given names as Chinese people choose them, with a pinyin family name.
EN_GIVEN = (
    "Kevin", "Grace", "Ethan", "Chloe", "Jason", "Vivian", "Leo", "Iris", "Tony", "Cindy",
    "Eric", "Fiona", "Henry", "Amber", "Ryan", "Sharon", "Nina", "Oscar", "Yvonne", "Frank",
)  # fmt: skip
EN_SURNAMES = (
    "Liu", "Huang", "Zhou", "Wang", "Xu", "Guo", "Ma", "Tang", "Lin", "Zheng", "Hu",
    "Gao", "Luo", "He", "Song", "Deng", "Feng", "Cao", "Pan", "Du",
)  # fmt: skip
#: Foreigners living in China.
WESTERN = (
    "Mark Jensen", "Sarah O'Neill", "Lucas Moreau", "Anna Kowalski", "David Reyes",
    "Emma Fischer", "Noah Schneider", "Isabel Costa", "Peter van Dijk", "Julia Novak",
    "Matteo Rossi", "Hannah Berg",
)  # fmt: skip

#: (province, city, districts, roads)
CITIES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("山东省", "济南市", ("历下区", "市中区", "槐荫区"),
     ("经十路", "泉城路", "舜耕路", "山大南路")),
    ("福建省", "福州市", ("鼓楼区", "台江区", "仓山区"),
     ("五四路", "杨桥中路", "工业路", "六一中路")),
    ("江西省", "南昌市", ("东湖区", "红谷滩区", "青山湖区"),
     ("八一大道", "阳明路", "红谷中大道")),
    ("河北省", "石家庄市", ("长安区", "桥西区", "裕华区"),
     ("中山东路", "槐安路", "建华南大街")),
    ("山西省", "太原市", ("小店区", "迎泽区", "万柏林区"),
     ("迎泽大街", "长风街", "南内环街")),
    ("甘肃省", "兰州市", ("城关区", "七里河区"),
     ("东岗西路", "庆阳路", "天水北路")),
    ("广西壮族自治区", "南宁市", ("青秀区", "西乡塘区"),
     ("民族大道", "大学东路", "东葛路")),
    ("海南省", "海口市", ("美兰区", "龙华区"),
     ("海秀东路", "国兴大道", "滨海大道")),
    ("江苏省", "徐州市", ("云龙区", "鼓楼区"),
     ("淮海东路", "解放南路", "和平路")),
    ("江苏省", "无锡市", ("梁溪区", "滨湖区"),
     ("人民中路", "蠡湖大道", "中山路")),
    ("广东省", "佛山市", ("禅城区", "南海区"),
     ("季华五路", "佛山大道中", "灯湖东路")),
    ("浙江省", "绍兴市", ("越城区", "柯桥区"),
     ("解放北路", "笛扬路", "中兴中路")),
    ("河南省", "洛阳市", ("洛龙区", "西工区"),
     ("开元大道", "中州中路", "九都西路")),
    ("安徽省", "芜湖市", ("镜湖区", "鸠江区"),
     ("北京中路", "赤铸山路", "银湖北路")),
    ("山东省", "烟台市", ("芝罘区", "莱山区"),
     ("南大街", "观海路", "迎春大街")),
    ("湖北省", "宜昌市", ("西陵区", "伍家岗区"),
     ("东山大道", "沿江大道", "夷陵大道")),
)  # fmt: skip
ESTATES = (
    "翠湖苑", "锦绣华庭", "金桂园", "阳光新城", "书香名邸", "滨江花园", "盛世嘉园", "枫林湾",
    "丽景苑", "和平里小区", "铁路宿舍", "水厂家属院", "紫薇山庄", "万象公馆", "龙湖春江郦城",
)  # fmt: skip
#: (province, city, county, town, village) of rural addresses.
RURAL = (
    ("河南省", "商丘市", "柘城县", "胡襄镇", "王楼村"),
    ("四川省", "南充市", "营山县", "骆市镇", "新店村"),
    ("湖南省", "邵阳市", "隆回县", "桃洪镇", "石门村"),
    ("安徽省", "阜阳市", "临泉县", "杨桥镇", "岳庄村"),
    ("云南省", "曲靖市", "宣威市", "板桥街道", "来宾社区"),
)
#: (city, districts, roads) for addresses written in English.
CITIES_EN: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Beijing", ("Chaoyang", "Haidian", "Dongcheng"),
     ("Jianguo Rd", "Guanghua Rd", "Xueyuan Rd", "Dongzhimen Outer St")),
    ("Shanghai", ("Xuhui", "Jing'an", "Changning"),
     ("Huaihai Middle Rd", "Tianyaoqiao Rd", "Yan'an West Rd", "Zhaojiabang Rd")),
    ("Shenzhen", ("Nanshan", "Futian", "Luohu"), ("Shennan Blvd", "Keyuan Rd", "Houhai Ave")),
    ("Guangzhou", ("Tianhe", "Yuexiu", "Haizhu"),
     ("Tiyu West Rd", "Huangpu Ave", "Zhongshan 5th Rd")),
    ("Chengdu", ("Wuhou", "Jinjiang", "Gaoxin"),
     ("Tianfu 3rd St", "Renmin South Rd", "Jiaozi Ave")),
    ("Hangzhou", ("Xihu", "Binjiang", "Gongshu"), ("Wensan Rd", "Jianghan Rd", "Moganshan Rd")),
    ("Suzhou", ("Gusu", "Wuzhong"), ("Ganjiang West Rd", "Dongwu North Rd")),
)  # fmt: skip
ESTATES_EN = ("Jade Garden", "Riverside Court", "Lakeview Residence", "Maple Heights",
              "Park Avenue Apartments", "Central Plaza")  # fmt: skip

MAIL_DOMAINS = ("189.cn", "wo.cn", "vip.163.com", "vip.qq.com", "live.cn", "hotmail.com",
                "icloud.com", "2980.com", "yeah.net", "mail.com")  # fmt: skip
WORK_DOMAINS = ("xinrui-tech.com.cn", "huadong-logistics.cn", "jinghe-edu.cn",
                "mingtai-law.com", "sanhe-design.cn")  # fmt: skip
EN_MAIL_DOMAINS = ("gmail.com", "outlook.com", "hotmail.com", "icloud.com", "yahoo.com",
                   "protonmail.com")  # fmt: skip
EN_WORK_DOMAINS = ("brightlane.io", "nordwind-trading.com", "mapleleaf-edu.cn",
                   "kestrel-consulting.com")  # fmt: skip
HANDLES = ("lanmao", "sunny_day", "xiaoyu", "mumu", "tiantian", "paopao", "lemon_tree",
           "yuedu", "feiyu", "qiuqiu")  # fmt: skip


@dataclass
class Person:
    """A name and the pieces an e-mail is built from."""

    name: str
    given: str  # romanised, lower case
    family: str
    english: bool


def chinese_person(rng: random.Random) -> Person:
    family, family_py = rng.choice(SURNAMES)
    given, given_py = rng.choice(GIVEN)
    return Person(family + given, given_py, family_py, english=False)


def english_person(rng: random.Random) -> Person:
    if rng.random() < 0.2:
        name = rng.choice(WESTERN)
        given, family = name.split(" ", 1)
    else:
        given, family = rng.choice(EN_GIVEN), rng.choice(EN_SURNAMES)
        name = f"{given} {family}"
    squash = family.lower().replace("'", "").replace(" ", "")
    return Person(name, given.lower(), squash, english=True)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def email(rng: random.Random, p: Person) -> str:
    """An e-mail that someone with this name might use."""
    year = rng.choice(("", str(rng.randint(60, 99)), str(rng.randint(1975, 2004)),
                       _digits(rng, 3)))
    if p.english:
        user = rng.choice((f"{p.given}.{p.family}", f"{p.given}{p.family}{year}",
                           f"{p.given[0]}{p.family}", f"{p.family}.{p.given}"))
        work = rng.random() < 0.25
        return f"{user}@{rng.choice(EN_WORK_DOMAINS if work else EN_MAIL_DOMAINS)}"
    kind = rng.random()
    if kind < 0.15:  # a QQ number on the VIP domain
        return f"{rng.randint(1, 9)}{_digits(rng, rng.randint(6, 9))}@vip.qq.com"
    if kind < 0.3:  # a nickname
        return f"{rng.choice(HANDLES)}{year or _digits(rng, 2)}@{rng.choice(MAIL_DOMAINS)}"
    if kind < 0.45:  # at work
        return f"{p.family}{p.given[0]}@{rng.choice(WORK_DOMAINS)}"
    user = rng.choice((f"{p.family}{p.given}{year}", f"{p.given}_{p.family}",
                       f"{p.family}.{p.given}{year}", f"{p.given}{p.family}"))
    return f"{user}@{rng.choice(MAIL_DOMAINS)}"


def chinese_address(rng: random.Random) -> str:
    """A Chinese address: estate, building, unit and room, or a village."""
    if rng.random() < 0.08:
        province, city, county, town, village = rng.choice(RURAL)
        group, number = rng.randint(1, 12), rng.randint(1, 90)
        return f"{province}{city}{county}{town}{village}{group}组{number}号"
    province, city, districts, roads = rng.choice(CITIES)
    head = (province if rng.random() < 0.3 else "") + city + rng.choice(districts)
    road, number = rng.choice(roads), rng.randint(1, 400)
    estate, building = rng.choice(ESTATES), rng.randint(1, 28)
    unit, room = rng.randint(1, 6), f"{rng.randint(1, 32)}{rng.randint(1, 4):02d}"
    pattern = rng.randrange(5)
    if pattern == 0:
        return f"{head}{road}{number}号{estate}{building}栋{unit}单元{room}室"
    if pattern == 1:
        return f"{head}{road}{number}号{estate}{building}-{unit}-{room}"
    if pattern == 2:
        return f"{head}{estate}{building}号楼{room}"
    if pattern == 3:
        return f"{head}{road}{number}号院{building}号楼{unit}门{room}"
    return f"{head}{road}{number}号"


def english_address(rng: random.Random) -> str:
    """An address in China as it is written in English."""
    city, districts, roads = rng.choice(CITIES_EN)
    district, road, number = rng.choice(districts), rng.choice(roads), rng.randint(1, 1999)
    room = f"{rng.randint(2, 33)}{rng.randint(1, 8):02d}"
    pattern = rng.randrange(4)
    if pattern == 0:
        return f"Room {room}, {number} {road}, {district} District, {city}"
    if pattern == 1:
        estate = rng.choice(ESTATES_EN)
        return (f"Apt {rng.randint(2, 30)}{rng.choice('ABCDEF')}, Building {rng.randint(1, 12)}, "
                f"{estate}, {number} {road}, {district} District, {city}")
    if pattern == 2:
        return (f"Unit {rng.randint(1, 9)}-{room}, No. {number} {road}, {district}, {city} "
                f"{_digits(rng, 6)}")
    return f"{number} {road}, Apt {room}, {district} District, {city}, China"
