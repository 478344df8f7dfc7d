"""The hand-written rows that ``hard_v2.jsonl`` adds to ``hard_v1.jsonl`` (pure data).

Each row is (tags, marked text). In the text, ``⟦n:…⟧``, ``⟦a:…⟧``, ``⟦e:…⟧`` and
``⟦q:…⟧`` mark the name, address, email and question; the markers are removed to
give the text, and what they enclose is the gold value. Fields without a marker
are null. The wording is written for this set only and comes from no bank of the
generator. Rows are fixed: they are never changed after a score has been seen.
"""

from __future__ import annotations

ROWS: tuple[tuple[str, str], ...] = (
    # --- multi-sentence questions: problem, history (dates, numbers), request ---
    ("multi_sentence section_label labelled",
     "投诉人：⟦n:岑予安⟧\n联系地址：⟦a:杭州市拱墅区湖墅南路188号3幢1单元702⟧\n"
     "情况说明：⟦q:我家的热水器装好才两个月，洗澡时水温忽冷忽热。11月4日报修后，师傅来换了一个温控阀，"
     "当天晚上又恢复原样。第二次报修单号是BX20241106007，到今天快三周了没人联系我。"
     "请安排厂家技术员上门彻底检修，修不好就给我换机。⟧\n回复邮箱：⟦e:cenyuan_hz@yeah.net⟧"),
    ("multi_sentence contact_last",
     "⟦q:在贵公司官网订的往返机票，回程航班被取消了却没有任何短信提醒。我3月18日到了机场才知道，"
     "只好自费买了另一家航空公司的票。客服电话里答应七个工作日内退回原票款，现在已经过去一个月了。"
     "我要求全额退还回程票款，并补偿我多花的一千二百元。⟧\n——\n⟦n:骆星河⟧ / ⟦e:luoxinghe@tom.com⟧"),
    ("multi_sentence section_label unlabelled",
     "业主反映：⟦q:地下车库B2层的排水沟堵了很久，一下雨积水就漫到车位上。"
     "上个月我们楼栋长已经在业主群里@过管家三次，每次都回复“已记录”。上周六暴雨，我的车底盘进水，"
     "4S店说维修要四千多。希望物业先把排水沟疏通，再商量车辆损失怎么赔。⟧"
     "⟦n:贺知遥⟧，⟦a:成都市武侯区簇桥街道锦城南苑7栋⟧"),
    ("multi_sentence subject email_body",
     "主题：会员卡退费问题\n\n您好：\n⟦q:我在你们门店办的游泳季卡，开卡第二周泳池就因为维修关闭了。"
     "门店通知说两周后重新开放，可到现在已经五十多天还没开。我在前台登记过退费申请，"
     "登记表编号YS-0915-22，店长说要等总部审批。请在月底前把剩余的卡费退给我，不要再让我空等。⟧\n"
     "此致\n⟦n:郜清禾⟧\n⟦e:gaoqinghe@88.com⟧"),
    ("multi_sentence closing_inside narrative",
     "我是住在⟦a:南京市鼓楼区湖南路街道马台街96号⟧的⟦n:滕若溪⟧。"
     "⟦q:楼下新开的烧烤店把油烟管道直接接到了我们楼的通风井里，家里天天一股烟味。"
     "从9月初开始我已经给街道打了四次电话，每次都说会派人来看，结果一次都没来过。"
     "孩子有哮喘，这段时间已经发作了两回。恳请环保部门上门检查，责令店家整改排烟管道。辛苦各位了！⟧"
     "有消息可以发邮件到⟦e:tengrx@vip.126.com⟧。"),
    ("multi_sentence ticket_form labelled",
     "【报修登记】\n报修人：⟦n:詹一苇⟧\n住址：⟦a:武汉市洪山区珞喻路1037号华科西二舍⟧\n"
     "报修内容：⟦q:宿舍卫生间的下水道从上周一开始反味，整层楼都能闻到。"
     "10月14日在后勤系统里提交了报修，编号HQ-77120，状态一直是待派工。"
     "请后勤尽快派人疏通，同时给个大概的维修时间。⟧\n受理时间：2024-10-21 09:12"),
    ("multi_sentence contact_last",
     "⟦q:给老人买的助听器戴了不到十天就没声音了。店员当时说三年内免费保修，"
     "可我10月8日送修后，门店又说是进水导致的，要收六百元维修费。老人根本没有戴着洗过澡，"
     "这个结论我不认可。请给出书面的检测报告，并按保修条款免费维修。⟧\n"
     "联系人：⟦n:祁望舒⟧；地址：⟦a:天津市南开区鞍山西道宜宾里4号楼2门⟧"),
    ("multi_sentence labelled",
     "姓名: ⟦n:柏松年⟧\n邮箱: ⟦e:baisongnian@sohu.net⟧\n"
     "投诉内容: ⟦q:搬家公司报价时说一口价八百元，搬到一半工人说楼层太高要加三百。"
     "我不同意，他们就把家具扔在楼道里不管了。当天下午四点我打了公司400电话，到现在还没人回电。"
     "现在衣柜门被磕坏了一块，床头也有划痕。要求公司按原价结算，赔偿损坏的家具，并对工人的行为道歉。⟧"),
    ("multi_sentence section_label email_body",
     "尊敬的领导：\n问题描述：⟦q:我女儿所在的幼儿园本学期突然更换了午餐供应商，孩子们反映饭菜经常是凉的。"
     "10月下旬班里有六个孩子同一天出现呕吐症状，园方只说是天气原因。"
     "家长委员会在11月2日提交过书面意见，园长至今没有答复。"
     "希望教育局过问一下，公开新供应商的资质和抽检记录。⟧\n"
     "家长 ⟦n:苗以沫⟧\n⟦e:miaoyimo_mom@163.net⟧"),
    ("multi_sentence unlabelled contact_last",
     "⟦q:手机在你们授权店换了电池，结果回家发现前置摄像头不能用了。第二天回去找，"
     "店员说是手机本身老化，跟换电池没关系。可我换电池之前摄像头一直是好的，维修单上也写着“外观功能正常”。"
     "我已经在12315平台登记了，登记号1100202411234567。请门店负责修好摄像头，费用由门店承担。⟧\n"
     "⟦n:甘棠⟧ ⟦e:gantang1990@21cn.net⟧"),
    ("multi_sentence closing_inside labelled",
     "【宠物医院投诉】\n客户：⟦n:阮青禾⟧\n事件经过：⟦q:我家猫做绝育手术后第三天伤口裂开了。"
     "当时医生说住院观察一晚，收了四百元住院费，可第二天早上我去接时发现它根本没在病房，而是关在走廊的笼子里。"
     "我找医院要病历，前台说病历不能外借。我要求医院出具完整病历和用药记录，并退还住院费。谢谢。⟧\n"
     "地址：⟦a:西安市雁塔区小寨东路126号百隆广场东侧⟧"),
    ("multi_sentence narrative",
     "本人⟦n:戚晚舟⟧，"
     "⟦q:去年12月在健身房签了一年的私教合同，一共四十八节课。上了十一节以后，教练没打招呼就换人了，"
     "新教练的时间总是约不上。今年3月我提出把剩下的课退掉，门店经理口头同意，"
     "但4月、5月两次去办手续都说财务不在。请门店在本月内按剩余课时退款，否则我会起诉。⟧"
     "我住⟦a:深圳市南山区蛇口望海路1088号⟧。"),
    ("multi_sentence email_body closing_inside",
     "To: 客服中心\n\n你好，\n⟦q:我订的婚纱照套餐合同写明精修四十张，拿到手只有二十五张。"
     "摄影师当时说剩下的十五张两周后补发，现在婚礼都过去一个半月了，一张也没收到。"
     "我打过门店电话，也去店里找过两次，每次接待的人都不一样，谁都说不清楚。"
     "请尽早把剩下的照片交给我，再拖我就只能申请退一部分费用了。麻烦你们了。⟧\n"
     "⟦n:吕南栀⟧\n⟦a:郑州市金水区花园路与农业路交叉口东北角⟧"),
    ("multi_sentence labelled section_label",
     "诉求人：⟦n:覃思远⟧\n诉求:⟦q:小区北门外的共享电单车停得到处都是，早上出门连盲道都走不了。"
     "我从8月开始在市民热线反映过三次，工单号分别是0812、0903和0917结尾，每次回访都说已处理。"
     "可北门外到现在还是老样子，上周还有老人被车绊倒。请城管部门划定停车区域，并督促运营公司定时清理。⟧\n"
     "电子邮箱：⟦e:qinsiyuan@aliyun.net⟧"),
    ("multi_sentence contact_last",
     "⟦q:旅行社的十日游行程单上写着全程四星酒店，到了第四天换成了一家没有电梯的小旅馆。"
     "导游说这是临时调整，回国后会补差价。我们回来后在10月30日提交了申请，"
     "对方一直说在核算。同团还有五户人家情况一样。希望旅游质监部门介入，督促旅行社按合同赔偿差价。⟧\n"
     "以上情况属实，联系人⟦n:芮知秋⟧，⟦a:长沙市岳麓区麓山南路932号⟧"),
    ("multi_sentence subject unlabelled",
     "邮件标题：电费代扣重复\n⟦q:我的电费是银行代扣的，9月份被连续扣了两次，一次二百一十六元。"
     "我打电话问银行，银行说是供电公司发起的扣款。打给供电公司，又说要我去营业厅开证明。"
     "我已经跑了两趟营业厅，第二次还排了一个多小时的队。请供电公司核实后把重复扣的钱退回来。⟧\n"
     "⟦n:严霁川⟧\n⟦a:合肥市蜀山区长江西路669号⟧"),
    ("multi_sentence ticket_form labelled",
     "| 字段 | 内容 |\n| --- | --- |\n| 申请人 | ⟦n:蒲听澜⟧ |\n"
     "| 联系邮箱 | ⟦e:putinglan@qq.net⟧ |\n"
     "| 事由 | ⟦q:驾校合同约定三个月内安排科目二考试，现在已经五个月了还没排上。"
     "教练说是考位紧张，可同期报名的学员有的已经考完了。我在6月和8月各找过一次校长办公室。"
     "请驾校给出明确的约考时间，做不到就按合同退还一半学费。⟧ |\n| 来源 | 微信 |"),
    ("multi_sentence narrative closing_inside",
     "我叫⟦n:管清晏⟧。"
     "⟦q:上个月在超市买的一箱进口酸奶，打开以后发现有两盒已经胀包了。我拿着小票回超市，"
     "服务台说过了七天不能退。可这批酸奶的保质期还有二十天，明显是储存出了问题。"
     "我当时拍了照片，也留了服务台员工的工号。请超市给我退换，并检查同一批次的货品。多谢！⟧"
     "邮箱是⟦e:guanqingyan@126.org⟧。"),
    ("multi_sentence labelled",
     "客户姓名：⟦n:班若谷⟧\n客户地址：⟦a:青岛市市南区香港中路76号颐和国际A座⟧\n"
     "反映问题：⟦q:物业在没有业主大会表决的情况下，把小区的公共绿地改成了收费停车场。"
     "从今年4月开始每个车位每月收两百元，收入去向没有任何公示。我们在6月联名写过信，"
     "物业经理只回复说是开发商定的。要求物业公开停车收入的账目，并把绿地恢复原状。⟧"),
    ("multi_sentence contact_last closing_inside",
     "⟦q:家里的宽带光纤在11月2日被施工队挖断了，报修后说要等市政审批才能重新拉线。"
     "这段时间我一直在家办公，只能用手机热点，已经多花了一百多元流量费。"
     "客服说宽带费用照收，停机期间不减免。请尽快恢复线路，并减免断网期间的月租。拜托了！⟧\n"
     "⟦n:俞见山⟧\n⟦a:苏州市工业园区星湖街328号⟧\n⟦e:yujianshan@outlook.org⟧"),
    ("multi_sentence email_body",
     "发件人：⟦e:fuyanqiu@foxmail.net⟧\n\n客服部：\n"
     "⟦q:我在你们电商平台上买的扫地机器人，用了两个月主刷就不转了。"
     "10月25日申请售后，平台让我自己寄回，运费二十三元也是我垫付的。"
     "11月10日商家说检测没问题，原样寄回来了，可到手还是不能用。"
     "请平台介入，给我换新机或者退货退款，同时报销来回的运费。⟧\n"
     "⟦n:傅砚秋⟧"),
    ("multi_sentence section_label unlabelled",
     "⟦n:解语桐⟧ ⟦e:xieyutong@sina.net⟧\n具体情况：⟦q:我的社保卡在9月份突然显示“卡片状态异常”，"
     "医院挂号、药店买药都用不了。社保中心说要我本人去银行重新激活，银行又说是社保那边锁的卡。"
     "两边已经来回跑了四趟，每次都要请半天假。希望两家单位能对接一下，一次把卡恢复正常。⟧"),
    ("multi_sentence labelled",
     "联系人：⟦n:翁听雨⟧，所在小区：⟦a:厦门市思明区莲前西路267号⟧，"
     "内容：⟦q:小区电梯在一个月里困人三次，最近一次是10月19日晚上，我和孩子被困了四十分钟。"
     "维保公司的记录上写着每月保养两次，可我们从来没见过有人来保养。"
     "业委会已经向市场监管局反映过，但到现在没有结果。要求更换维保公司，并公开最近一年的保养记录。⟧"),
    ("multi_sentence english contact_last",
     "⟦q:My new washing machine has leaked three times since it was installed on 2 September. "
     "The technician came on 14 September, replaced a hose and said it was fixed. "
     "It leaked again last night and damaged the kitchen floor. "
     "I want the machine replaced and the floor repair paid for.⟧\n"
     "-- ⟦n:Iris Cheung⟧, ⟦e:iris.cheung@proton.me⟧"),
    ("multi_sentence english labelled",
     "Name: ⟦n:Daniel Okafor⟧\nAddress: ⟦a:Flat 5, 18 Lockhart Road, Wan Chai⟧\n"
     "Details: ⟦q:The gym froze my membership without asking me. When I called on 3 June they "
     "said it was a system error and would be fixed in a day. Two weeks later I still cannot "
     "get in. Please unfreeze my card and add the lost days to my membership.⟧"),
    ("multi_sentence ticket_form",
     "工单详情——来电人：⟦n:荀一帆⟧；来电号码：139-0571-8826；"
     "描述：⟦q:办理的电视宽带融合套餐里说好送一个机顶盒，安装工人却收了我二百元押金。"
     "我在10月9日问客服，客服说押金会在三十天内退回。现在已经过了四十五天，押金一分没退。"
     "请把押金退到我的话费账户里。⟧；地址：⟦a:宁波市鄞州区天童南路588号⟧"),
    ("multi_sentence narrative",
     "我是⟦a:昆明市五华区翠湖南路52号⟧的住户⟦n:郦晚晴⟧，"
     "⟦q:家门口的人行道被一家餐馆占了，摆了六张桌子，晚上吃饭的人吵到凌晨一两点。"
     "我9月给城管打过电话，他们来了一次，走了以后店家又照样摆出来。"
     "10月我又在网上留言，到现在也没有答复。请城管部门长期管起来，不要来一次就算了。⟧"),

    # --- half-width quotes and backslashes inside values ---
    ("quotes labelled",
     "姓名：⟦n:褚南乔⟧\n地址：⟦a:广州市越秀区东风中路437号⟧\n"
     "问题：⟦q:我在\"安居优选\"APP上预约的保洁阿姨迟到了两个小时，打扫完还把我家的花瓶打碎了。⟧"),
    ("quotes contact_last",
     "⟦q:订单页面一直显示\"配送中\"，可快递员说包裹早就退回仓库了。⟧\n——\n⟦n:宓思齐⟧；⟦e:misiqi@yeah.org⟧"),
    ("quotes multi_sentence section_label",
     "情况说明:⟦q:我在\"鲜果时光\"小程序上买的车厘子，收到时一半都烂了。"
     "我10月7日申请售后，系统一直显示\"审核中\"。客服说要等三到五个工作日，现在已经两周了。"
     "请尽快把货款退给我。⟧\n联系人:⟦n:卜晓岚⟧"),
    ("quotes unlabelled",
     "⟦n:邴书瑶⟧ ⟦a:沈阳市和平区南京北街206号⟧ "
     "⟦q:营业员说\"这个套餐随时可以取消\"，真去取消时却说合约期内不能改。⟧"),
    ("quotes email_body",
     "您好：\n⟦q:物业群里发通知说\"本月起垃圾清运费每户加收三十元\"，没有说明任何依据，"
     "我想知道这笔钱到底是谁批准的。⟧\n⟦n:仇语嫣⟧\n⟦e:qiuyuyan@icloud.net⟧"),
    ("quotes labelled",
     "客户：⟦n:冼星野⟧\n邮箱：⟦e:xianxingye@qq.org⟧\n"
     "诉求内容：⟦q:导出的电子发票文件名是\"发票\\2024\\11\\作废\"，打开以后显示的金额和我实付的对不上。⟧"),
    ("quotes narrative",
     "我叫⟦n:笪晴川⟧，住在⟦a:南昌市东湖区八一大道357号⟧。"
     "⟦q:上周在\"快修侠\"平台上找的师傅来修空调，加了一次氟收了我五百八，第二天空调还是不制冷。⟧"
     "请回复到⟦e:daqingchuan@139.org⟧。"),
    ("quotes multi_sentence contact_last",
     "⟦q:银行短信提示我的信用卡有一笔\"境外消费USD 86.00\"，可我从来没出过国。"
     "11月3日我就打了银行电话挂失，客服说会在十五个工作日内调查。"
     "现在账单日到了，这笔钱还是算在我的欠款里。请银行在调查结果出来前先暂停这笔扣款。⟧\n"
     "⟦n:訾明远⟧ / ⟦a:石家庄市长安区中山东路398号⟧"),
    ("quotes ticket_form labelled",
     "[报修人] ⟦n:逯子衿⟧\n[报修地址] ⟦a:太原市小店区长风街道平阳路西一巷9号⟧\n"
     "[问题] ⟦q:燃气表屏幕上一直显示\"E-07\"，燃气公司说是电池没电，换了电池还是这样。⟧\n"
     "[优先级] 普通"),
    ("quotes unlabelled",
     "⟦q:共享充电宝归还后，订单还显示\"使用中\"，一直按小时扣钱，已经扣了九十九元封顶。⟧"
     "⟦n:漆晓帆⟧，⟦e:qixiaofan@gmail.org⟧"),
    ("quotes labelled",
     "名字：⟦n:亓思琪⟧\n电邮：⟦e:qisiqi@live.cn⟧\n"
     "描述：⟦q:学校的成绩系统把我孩子的名字显示成了\"亓\\思琪\"，老师说改不了，导致准考证也印错了。⟧"),
    ("quotes multi_sentence email_body closing_inside",
     "标题：关于\"惠民卡\"续费的投诉\n\n客服中心：\n"
     "⟦q:我办的\"惠民卡\"去年到期后，被自动续了一年，扣了三百六十元。"
     "办卡时工作人员明确说过不会自动续费，合同里也没有这一条。"
     "我在12月2日打电话要求退款，对方说要提交材料审核。请尽快退款，谢谢。⟧\n⟦n:扈晨曦⟧"),
    ("quotes contact_last",
     "⟦q:电视机开机就提示\"系统文件C:\\boot\\sys丢失\"，售后说要寄回厂家，来回至少一个月。⟧\n"
     "联系人：⟦n:佘远舟⟧\n地址：⟦a:福州市鼓楼区五四路158号⟧"),
    ("quotes narrative",
     "本人⟦n:嵇望北⟧，"
     "⟦q:在\"好运来\"彩票站买的即开票，刮出来的中奖金额店主说是\"印刷错误\"不给兑。⟧"
     "我家在⟦a:兰州市城关区庆阳路211号⟧。"),
    ("quotes section_label labelled",
     "用户：⟦n:缪听松⟧\n反映事项：⟦q:小区公告栏贴的\"停水通知\"写的是周三，结果周一就停了一整天。⟧\n"
     "邮箱：⟦e:miaotingsong@outlook.net⟧"),
    ("quotes multi_sentence labelled",
     "投诉人：⟦n:蔺若初⟧\n地址：⟦a:贵阳市云岩区中华北路289号⟧\n"
     "问题：⟦q:房产中介在合同里写的是\"满五唯一\"，过户时才发现房子不满五年，多交了两万多元的税。"
     "我8月找中介理论，对方说是房东提供的信息有误。到现在中介和房东都不肯承担这笔税费。"
     "要求中介退还中介费，并赔偿多交的税款。⟧"),
    ("quotes unlabelled",
     "⟦n:牟清越⟧ ⟦e:mouqingyue@126.org⟧ "
     "⟦q:医院自助机打印出来的报告单上，检查项目写的是\"腹部\\盆腔彩超\"，可我只做了腹部的，却收了两项的钱。⟧"),
    ("quotes email_body",
     "From: ⟦e:wenyiheng@hotmail.net⟧\n\n你们好，\n"
     "⟦q:快递单上的收件地址被系统改成了\"详见备注\"，快递员说找不到地方，直接把包裹退了。⟧\n"
     "⟦n:闻一衡⟧\n⟦a:哈尔滨市南岗区西大直街92号⟧"),
    ("quotes contact_last multi_sentence",
     "⟦q:我在\"悦读\"书店办的储值卡，里面还有四百多元。今年7月书店突然关门，门上只贴了一张\"内部装修\"的告示。"
     "到现在四个月了一直没开，电话也打不通。希望有关部门帮忙追回余额。⟧\n"
     "⟦n:冉书白⟧，⟦a:重庆市渝北区龙溪街道金紫山路45号⟧，⟦e:ranshubai@qq.org⟧"),
    ("quotes labelled",
     "联系人：⟦n:靳云舒⟧\n诉求：⟦q:APP里的退款按钮点了以后提示\"请求参数错误\\n请重试\"，试了十几次都一样。⟧\n"
     "住址：⟦a:济南市历下区泉城路180号⟧"),
    ("quotes narrative",
     "⟦n:仝一鸣⟧在此反映：⟦q:小区门口的\"便民\"菜店，秤明显不准，一斤的菜称出来有一斤三两。⟧"
     "我的邮箱⟦e:tongyiming@sohu.org⟧。"),
    ("quotes ticket_form",
     "【工单】\n| 申请人 | ⟦n:粟星澜⟧ |\n| 地址 | ⟦a:南宁市青秀区民族大道136号⟧ |\n"
     "| 事由 | ⟦q:网上营业厅显示我的宽带\"已拆机\"，可我从来没申请过拆机，现在家里断网了。⟧ |"),
    ("quotes english unlabelled",
     "⟦n:Chloe Marsh⟧ ⟦e:chloe.marsh@fastmail.net⟧ "
     "⟦q:The courier app says my parcel was \"handed to resident\" but nobody was home that day.⟧"),
    ("quotes english labelled",
     "Name: ⟦n:Omar Haddad⟧\nIssue: ⟦q:My invoice lists a \"setup\\activation fee\" that was never "
     "mentioned when I signed up.⟧\nEmail: ⟦e:omar.haddad@gmx.net⟧"),
    ("quotes multi_sentence unlabelled closing_inside",
     "⟦n:鞠晏清⟧，⟦a:长春市朝阳区人民大街5688号⟧。"
     "⟦q:新买的电动车仪表盘一直报\"电机故障\"，骑不了多远就断电。4S店第一次说是软件问题，刷了一次系统；"
     "第二次说要换控制器，等配件等了二十天。请厂家直接给我换车，不要再修了。麻烦了！⟧"),
    ("quotes labelled",
     "报修人：⟦n:阙明朗⟧\n邮箱：⟦e:queminglang@yeah.org⟧\n"
     "报修内容：⟦q:门禁系统把我家的卡号登记成了\"3-1-\\502\"，刷卡一直提示无效。⟧"),
    ("quotes contact_last",
     "⟦q:保险公司理赔短信写着\"资料不全，请补充\"，可没说到底缺哪份资料，打电话也问不出来。⟧\n"
     "联系方式附后：⟦n:晏秋实⟧ / ⟦e:yanqiushi@aliyun.org⟧"),
    ("quotes narrative section_label",
     "我是⟦n:鄢照临⟧。具体情况：⟦q:电影院在售票页面标的是\"IMAX厅\"，进去才发现是普通厅，票价却贵了四十元。⟧"
     "我住在⟦a:海口市龙华区滨海大道105号⟧。"),
    ("quotes multi_sentence ticket_form",
     "【来电记录】\n来电人：⟦n:沃听泉⟧\n投诉内容：⟦q:话费账单上多了一项\"增值业务\\视频彩铃\"，每月十元。"
     "我从来没订过，上个月已经打电话退订过一次，这个月又扣了。"
     "请把这几个月扣的钱全部退回，并查清楚是谁给我开通的。⟧\n处理状态：待回访"),
    ("quotes unlabelled",
     "⟦q:物业收据上盖的章是\"某某物业管理处（临时）\"，我怀疑这个收据根本不正规。⟧"
     "⟦n:焦砚池⟧ ⟦a:呼和浩特市赛罕区大学东街43号⟧"),
    ("quotes subject email_body",
     "主题：售后\"上门服务\"收费\n\n客服您好：\n"
     "⟦q:宣传页上写着\"免费上门安装\"，师傅来了却说墙是承重墙，要另收打孔费一百五。⟧\n"
     "⟦n:越千帆⟧\n⟦e:yueqianfan@88.net⟧"),
    ("quotes labelled multi_sentence",
     "称呼：⟦n:宫若水⟧\n地址：⟦a:乌鲁木齐市天山区解放南路128号⟧\n"
     "投诉事项：⟦q:我在网上缴的取暖费，付款页面显示\"缴费成功\"，可供热公司说没收到。"
     "我把付款截图发给客服，对方说要等银行对账。10月20日开始供暖，我家到现在还是凉的。"
     "请先恢复我家的供暖，再查钱去哪了。⟧"),
    ("multi_sentence subject email_body",
     "RE: 投诉停车场乱收费\n\n你好：\n"
     "⟦q:医院地下停车场的收费牌写着首小时免费，出场时却收了我十五元。\n"
     "收费员说免费时段只针对住院病人家属，可收费牌上没有这句话。\n"
     "我10月16日在医院意见箱投了信，到现在没人联系我。请医院把收费规则写清楚，并退还多收的钱。⟧\n"
     "⟦n:庾知白⟧ ⟦e:yuzhibai@tom.org⟧"),
    ("quotes multi_sentence labelled",
     "姓名：⟦n:乜春山⟧\n问题描述：⟦q:家里的智能门锁半夜自己报警，APP推送\"检测到撬锁\"。\t"
     "厂家客服让我重置，重置后第二天又报了三次。\t"
     "请厂家派人上门检查，查不出原因就给我退货。⟧\n邮箱：⟦e:niechunshan@163.org⟧"),
    ("multi_sentence contact_last closing_inside",
     "⟦q:我父亲在社区卫生服务中心开的降压药，连续两个月都说缺货，让我们去大医院买。"
     "大医院的药价贵了将近一倍，而且挂号排队要大半天。上个月我在社区的意见本上写了留言，一直没有回音。"
     "希望卫生服务中心保证常用药的供应，至少提前告知到货时间。先谢谢你们。⟧\n"
     "⟦n:桓静姝⟧；⟦a:大连市沙河口区西安路136号⟧"),
)
