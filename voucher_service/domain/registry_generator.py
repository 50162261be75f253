"""A deterministic certified-product registry at the seed scale, for demos, tests and benchmarks.

3,552 products from 1,252 suppliers across 106 Guangxi counties (GUANGXI_COUNTIES), named after each
county's real specialities, with valid GTIN-13s under China's 69 prefix. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Sequence

from voucher_service.domain.gtin import with_check_digit
from voucher_service.domain.guangxi_counties import PREFECTURES, REGISTRY_COUNTIES, short_name
from voucher_service.domain.registry_rows import HEADER
from voucher_service.domain.states import ProductStatus

SEED_PRODUCTS = 3552
SEED_SUPPLIERS = 1252
BAMA = "451227"

# Package sizes by kind of product.
RICE = ("2.5kg", "5kg", "10kg")
OIL = ("500ml", "1L", "2.5L", "5L")
FRUIT = ("2.5kg", "5kg", "5kg礼盒装", "9斤装")
TEA = ("100g", "250g", "500g", "250g礼盒装")
MEAT = ("500g", "1kg", "2kg礼盒装")
BIRD = ("整只约1.2kg", "整只约1.5kg", "整只约2kg")
DRY = ("250g", "500g", "1kg")
SPICE = ("100g", "250g", "500g")
SNACK = ("300g×3袋", "330g×5袋", "400g×10袋")
VEG = ("2.5kg", "5kg", "10kg")

# Each county's best-known products: (name, category, sizes).
SPECIALITIES: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "450107": [("金陵火龙果", "水果", FRUIT)],
    "450110": [("武鸣沃柑", "水果", FRUIT)],
    "450123": [("隆安香蕉", "水果", FRUIT), ("那桐火龙果", "水果", FRUIT)],
    "450124": [("马山黑山羊肉", "畜禽肉蛋", MEAT), ("马山旱藕粉丝", "特色食品", DRY)],
    "450125": [("上林大米", "粮油", RICE)],
    "450126": [("宾阳酸粉", "特色食品", SNACK), ("黎塘莲藕", "蔬菜", VEG)],
    "450181": [("横县茉莉花茶", "茶叶", TEA), ("横州大粽", "特色食品", ("500g×2只", "1kg礼盒装"))],
    "450203": [("柳州螺蛳粉", "特色食品", SNACK)],
    "450204": [("柳州螺蛳粉", "特色食品", SNACK)],
    "450205": [("柳州螺蛳粉", "特色食品", SNACK)],
    "450206": [("百朋莲藕", "蔬菜", VEG), ("柳州螺蛳粉", "特色食品", SNACK)],
    "450222": [("柳城蜜橘", "水果", FRUIT)],
    "450223": [("鹿寨蜜橙", "水果", FRUIT)],
    "450224": [("融安金桔", "水果", FRUIT), ("融安滤粉", "特色食品", DRY)],
    "450225": [("融水香鸭", "畜禽肉蛋", BIRD), ("融水紫黑香糯", "粮油", RICE)],
    "450226": [("三江早春茶", "茶叶", TEA), ("三江油茶", "特色食品", SNACK)],
    "450304": [("桂林辣椒酱", "调味品", ("210g", "230g×2瓶", "500g"))],
    "450305": [("桂林米粉", "特色食品", SNACK)],
    "450311": [("雁山月柿", "水果", FRUIT)],
    "450312": [("临桂罗汉果", "中药材", ("6个装", "10个装", "20个礼盒装")), ("临桂砂糖橘", "水果", FRUIT)],
    "450321": [("阳朔金桔", "水果", FRUIT), ("阳朔沙田柚", "水果", FRUIT)],
    "450323": [("灵川砂糖橘", "水果", FRUIT)],
    "450324": [("全州禾花鱼干", "水产品", DRY), ("全州红薯粉", "特色食品", DRY)],
    "450325": [("兴安葡萄", "水果", FRUIT), ("兴安白果", "干货山珍", DRY)],
    "450326": [("永福罗汉果", "中药材", ("6个装", "10个装", "20个礼盒装"))],
    "450327": [("灌阳雪梨", "水果", FRUIT), ("灌阳红枣", "干货山珍", DRY)],
    "450328": [("龙脊辣椒", "调味品", SPICE), ("龙脊茶", "茶叶", TEA), ("龙胜凤鸡", "畜禽肉蛋", BIRD)],
    "450329": [("资源红提", "水果", FRUIT)],
    "450330": [("平乐石崖茶", "茶叶", TEA), ("平乐月柿", "水果", FRUIT)],
    "450332": [("恭城月柿", "水果", FRUIT), ("恭城柿饼", "干货山珍", DRY), ("恭城油茶", "特色食品", SNACK)],
    "450381": [("荔浦芋", "蔬菜", VEG), ("荔浦砂糖橘", "水果", FRUIT)],
    "450403": [("梧州龟苓膏", "特色食品", ("250g×6碗", "250g×12碗"))],
    "450405": [("梧州龟苓膏", "特色食品", ("250g×6碗", "250g×12碗"))],
    "450421": [("六堡茶", "茶叶", TEA)],
    "450422": [("太平米饼", "特色食品", ("400g", "800g礼盒装")), ("藤县和平粉", "特色食品", DRY)],
    "450423": [("蒙山蚕丝被", "日用手工", ("1.5kg", "2kg"))],
    "450481": [("岑溪三黄鸡", "畜禽肉蛋", BIRD), ("岑溪软枝油茶籽油", "粮油", OIL)],
    "450503": [("北海沙虫干", "水产品", ("100g", "250g")), ("北海虾干", "水产品", DRY)],
    "450512": [("北部湾海鸭蛋", "畜禽肉蛋", ("10枚装", "20枚装", "30枚礼盒装"))],
    "450521": [("合浦海鸭蛋", "畜禽肉蛋", ("10枚装", "20枚装", "30枚礼盒装"))],
    "450602": [("防城金花茶", "茶叶", TEA)],
    "450603": [("防城金花茶", "茶叶", TEA), ("防城肉桂", "调味品", SPICE), ("防城八角", "调味品", SPICE)],
    "450621": [("上思香糯", "粮油", RICE)],
    "450681": [("东兴红姑娘红薯", "蔬菜", VEG)],
    "450702": [("钦州大蚝干", "水产品", DRY)],
    "450721": [("灵山荔枝", "水果", FRUIT), ("灵山凉粉草", "中药材", DRY)],
    "450722": [("浦北红椎菌", "干货山珍", ("100g", "250g")), ("浦北黑猪肉", "畜禽肉蛋", MEAT)],
    "450804": [("覃塘毛尖茶", "茶叶", TEA), ("覃塘莲藕", "蔬菜", VEG)],
    "450821": [("平南石硖龙眼", "水果", FRUIT)],
    "450881": [("桂平西山茶", "茶叶", TEA), ("麻垌荔枝", "水果", FRUIT)],
    "450902": [("玉林牛巴", "畜禽肉蛋", ("200g", "500g"))],
    "450921": [("容县沙田柚", "水果", FRUIT)],
    "450922": [("陆川猪肉", "畜禽肉蛋", MEAT), ("陆川橘红", "中药材", DRY)],
    "450923": [("博白桂圆肉", "干货山珍", DRY), ("博白空心菜", "蔬菜", VEG)],
    "450981": [("北流荔枝", "水果", FRUIT), ("北流百香果", "水果", FRUIT)],
    "451002": [("百色芒果", "水果", FRUIT)],
    "451003": [("田阳香芒", "水果", FRUIT), ("田阳番茄", "蔬菜", VEG)],
    "451022": [("田东香芒", "水果", FRUIT), ("百色芒果", "水果", FRUIT)],
    "451024": [("德保脐橙", "水果", FRUIT)],
    "451026": [("那坡八角", "调味品", SPICE)],
    "451027": [("凌云白毫茶", "茶叶", TEA)],
    "451028": [("乐业猕猴桃", "水果", FRUIT)],
    "451029": [("田林八渡笋", "干货山珍", DRY), ("田林山茶油", "粮油", OIL)],
    "451030": [("西林砂糖橘", "水果", FRUIT), ("西林麻鸭", "畜禽肉蛋", BIRD)],
    "451031": [("隆林黑山羊肉", "畜禽肉蛋", MEAT)],
    "451081": [("靖西香糯", "粮油", RICE), ("靖西大果山楂", "水果", FRUIT)],
    "451082": [("平果哈密瓜", "水果", FRUIT)],
    "451102": [("八步三华李", "水果", FRUIT)],
    "451103": [("芳林马蹄", "蔬菜", VEG)],
    "451121": [("昭平茶", "茶叶", TEA)],
    "451122": [("钟山贡柑", "水果", FRUIT)],
    "451123": [("富川脐橙", "水果", FRUIT)],
    "451203": [("宜州桑蚕丝被", "日用手工", ("1.5kg", "2kg"))],
    "451221": [("南丹瑶鸡", "畜禽肉蛋", BIRD), ("南丹巴平米", "粮油", RICE)],
    "451222": [("天峨珍珠李", "水果", FRUIT)],
    "451223": [("凤山核桃", "干货山珍", DRY)],
    "451224": [("东兰墨米", "粮油", RICE), ("东兰乌鸡", "畜禽肉蛋", BIRD)],
    "451225": [("罗城毛葡萄", "水果", FRUIT)],
    "451226": [("环江香猪", "畜禽肉蛋", MEAT), ("环江香糯", "粮油", RICE)],
    BAMA: [
        ("巴马香米", "粮油", RICE),
        ("巴马香猪", "畜禽肉蛋", MEAT),
        ("巴马火麻油", "粮油", OIL),
        ("巴马山茶油", "粮油", OIL),
        ("巴马油鱼", "水产品", DRY),
    ],
    "451228": [("都安山羊肉", "畜禽肉蛋", MEAT)],
    "451229": [("大化七百弄鸡", "畜禽肉蛋", BIRD), ("大化红水河鱼干", "水产品", DRY)],
    "451302": [("来宾古法红糖", "特色食品", DRY)],
    "451321": [("忻城糯玉米", "粮油", RICE)],
    "451322": [("象州红米", "粮油", RICE)],
    "451324": [("金秀绞股蓝茶", "茶叶", TEA), ("金秀野生红茶", "茶叶", TEA)],
    "451421": [("扶绥澳洲坚果", "干货山珍", DRY)],
    "451423": [("龙州桄榔粉", "特色食品", DRY)],
    "451424": [("大新苦丁茶", "茶叶", TEA)],
    "451425": [("天等指天椒", "调味品", SPICE), ("天等指天椒酱", "调味品", ("210g", "500g"))],
}

# What almost every Guangxi county produces; named after the county ("巴马山茶油").
REGIONAL = [
    ("山茶油", "粮油", OIL),
    ("砂糖橘", "水果", FRUIT),
    ("沃柑", "水果", FRUIT),
    ("百香果", "水果", FRUIT),
    ("土蜂蜜", "蜂产品", ("500g", "1kg")),
    ("八角", "调味品", SPICE),
    ("香菇", "干货山珍", DRY),
    ("黑木耳", "干货山珍", DRY),
    ("红薯粉", "特色食品", DRY),
    ("生态大米", "粮油", RICE),
    ("土鸡蛋", "畜禽肉蛋", ("30枚装", "60枚装")),
    ("腊肉", "畜禽肉蛋", MEAT),
    ("竹笋干", "干货山珍", DRY),
    ("红糖", "特色食品", DRY),
]
GRADES = {"粮油": ("", "精选", "有机"), "水果": ("", "精品", "特级"), "茶叶": ("", "特级", "一级")}

BRAND_WORDS = (
    "长寿源 金穗 绿源 山里香 瑶乡 壮乡 红水河 丰泽 富民 兴农 惠农 嘉禾 青山 天润 康寿 石山 春晖 茂源 乡味 "
    "桂香 金果 甜园 沃土 丰收 益农 顺达 鑫源 果满园 润泽 华盛 众诚 同心 田园 溪谷 云雾 金山 福泰 瑞丰 新农 "
    "聚丰 安康 碧水 翠岭 山泉 绿野 金田 禾丰 农家乐 百草 清泉 古村 仙草 喜乐 宏源 恒丰 联丰 勤富 致富"
).split()
SUPPLIER_FORMS = (
    ("{short}{word}农业专业合作社", "3"),
    ("{short}{word}种养专业合作社", "3"),
    ("{name}{word}果蔬专业合作社", "3"),
    ("{name}{word}农产品开发有限公司", "1"),
    ("广西{short}{word}生态农业有限公司", "1"),
    ("广西{short}{word}食品有限公司", "1"),
    ("{city}{word}农业科技有限公司", "1"),
)
CERT_PREFIX = {"national": "CNFP", "guangxi": "GXFP", "shenzhen": "SZZP"}
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def uscc(rng: random.Random, county_code: str, entity_type: str) -> str:
    """A well-formed unified social credit code (统一社会信用代码, GB 32100) registered in the county."""
    body = "MA" + "".join(rng.choice(USCC_ALPHABET[:-1]) for _ in range(6))
    total = sum(w * (int(c) if c.isdigit() else ord(c) - 55) for w, c in zip(ORG_WEIGHTS, body, strict=True))
    org_check = {10: "X", 11: "0"}.get(11 - total % 11, str(11 - total % 11))
    first17 = "9" + entity_type + county_code + body + org_check
    check = (
        31 - sum(w * USCC_ALPHABET.index(c) for w, c in zip(USCC_WEIGHTS, first17, strict=True)) % 31
    ) % 31
    return first17 + USCC_ALPHABET[check]


def _quotas(total: int, weights: dict[str, float], minimum: int) -> dict[str, int]:
    """Split `total` over keys in proportion to weights, at least `minimum` each, largest remainder first."""
    spare = total - minimum * len(weights)
    scale = spare / sum(weights.values())
    exact = {k: w * scale for k, w in weights.items()}
    quotas = {k: minimum + int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (int(exact[k]) - exact[k], k))[: total - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def _county_weight(code: str) -> float:
    if code == BAMA:
        return 4.0  # the demo programme's target county
    if code[:4] in ("4510", "4512"):  # 百色 and 河池: most of Guangxi's former poverty counties
        return 1.6
    return 0.6 if int(code[4:]) < 21 else 1.0  # districts (01-20) produce less than counties


def _years_later(start: dt.date, years: int) -> dt.date:
    """The last day of a window of `years` years starting on `start`."""
    day = min(start.day, 28) if (start.month, start.day) == (2, 29) else start.day
    return start.replace(year=start.year + years, day=day) - dt.timedelta(days=1)


def _validity(rng: random.Random) -> tuple[dt.date, dt.date, str]:
    """A certification window and status: mostly active and current, some expired, suspended, revoked."""
    draw = rng.random()
    if 0.86 <= draw < 0.92:  # expired: certified in 2023-24 for two years
        start = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(700))
        return start, _years_later(start, 2), ProductStatus.ACTIVE.value
    start = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(546))
    end = min(_years_later(start, 3), dt.date(2028, 12, 31))
    status = (
        ProductStatus.ACTIVE
        if draw < 0.86
        else ProductStatus.SUSPENDED
        if draw < 0.96
        else ProductStatus.REVOKED
    )
    return start, end, status.value


def _supplier_names(rng: random.Random, code: str, count: int) -> list[tuple[str, str]]:
    name = REGISTRY_COUNTIES[code]
    short = short_name(name)
    fields = {"name": name, "short": short, "city": PREFECTURES[code[:4]].removesuffix("市")}
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < count:
        form, kind = rng.choice(SUPPLIER_FORMS)
        text = form.format(word=rng.choice(BRAND_WORDS), **fields)
        if text not in seen:
            seen.add(text)
            out.append((text, kind))
    return out


def generate_registry(seed: int = 1) -> list[list[str]]:
    """The seed-scale registry as CSV rows (without the header), deterministic in `seed`."""
    rng = random.Random(seed)
    counties = sorted(REGISTRY_COUNTIES)
    per_county = _quotas(SEED_SUPPLIERS, {c: _county_weight(c) for c in counties}, minimum=4)
    suppliers = [(c, n, k) for c in counties for n, k in _supplier_names(rng, c, per_county[c])]
    per_supplier = [1] * len(suppliers)
    while sum(per_supplier) < SEED_PRODUCTS:
        i = rng.randrange(len(suppliers))
        if per_supplier[i] < 8:
            per_supplier[i] += 1
    prefixes = rng.sample(range(10_000_000), len(suppliers))
    counters: dict[str, int] = {}
    rows: list[list[str]] = []
    for (code, supplier_name, kind), n_products, prefix in zip(
        suppliers, per_supplier, prefixes, strict=True
    ):
        supplier_id = uscc(rng, code, kind)
        company = f"69{prefix:07d}"
        item = rng.randrange(900)
        names: set[str] = set()
        while len(names) < n_products:
            product_name, category = _product(rng, code)
            if product_name in names:
                continue
            names.add(product_name)
            gtins = []
            for _ in range(rng.choices((1, 2, 3), weights=(65, 28, 7))[0]):
                gtins.append(with_check_digit(f"{company}{item:03d}"))
                item += 1
            rows.append(_row(rng, counters, code, product_name, category, supplier_id, supplier_name, gtins))
    return rows


def _product(rng: random.Random, code: str) -> tuple[str, str]:
    local = SPECIALITIES.get(code, [])
    if local and rng.random() < 0.7:
        name, category, sizes = rng.choice(local)
    else:
        base, category, sizes = rng.choice(REGIONAL)
        name = short_name(REGISTRY_COUNTIES[code]) + base
    grade = rng.choice(GRADES.get(category, ("",)))
    return f"{grade}{name} {rng.choice(sizes)}", category


def _row(
    rng: random.Random,
    counters: dict[str, int],
    code: str,
    product_name: str,
    category: str,
    supplier_id: str,
    supplier_name: str,
    gtins: Sequence[str],
) -> list[str]:
    cert_type = rng.choices(("national", "guangxi", "shenzhen"), weights=(45, 40, 15))[0]
    valid_from, valid_to, status = _validity(rng)
    scope = f"{valid_from.year}" if cert_type == "shenzhen" else f"{valid_from.year}-{code}"
    key = f"{CERT_PREFIX[cert_type]}-{scope}"
    counters[key] = counters.get(key, 0) + 1
    return [
        f"{key}-{counters[key]:04d}",
        cert_type,
        product_name,
        category,
        supplier_id,
        supplier_name,
        code,
        REGISTRY_COUNTIES[code],
        "|".join(gtins),
        valid_from.isoformat(),
        valid_to.isoformat(),
        status,
    ]


def registry_csv(rows: Sequence[Sequence[str]]) -> str:
    """The rows as a registry file (CONTRACT §5), header first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue()
