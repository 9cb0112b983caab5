#!/usr/bin/env python3
"""Generate realistic SCRM contacts as a nurture import CSV.

    python3 bench/gen_contacts.py --rows 3000 --out contacts/sample.csv
    python3 bench/gen_contacts.py --rows 1000000 --out bench/out/contacts.csv

The output is deterministic for a given --seed, --rows and --ref-date: the
same arguments always write the same bytes, so the committed sample can be
regenerated and diffed.

Columns: id, name, email, phone, wecom_external_userid, timezone, created_at,
last_active_at, tags, city, level, source, lifetime_value.

- created_at is spread over the 400 days before --ref-date, last_active_at
  over the last 120 days (never before created_at); about 8% of contacts were
  never active (empty last_active_at).
- Timestamps are RFC 3339 with a +08:00 offset.
- Every row is valid. Deliberately broken rows live in contacts/bad-rows.csv,
  never here.

Speed matters (1,000,000 rows for the benchmark): rows are built with plain
string operations and written in chunks, nothing is held in memory.
"""

import argparse
import random
import sys
import time

# Surnames and given-name characters with their pinyin (for e-mail addresses).
SURNAMES = [
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
    ("杨", "yang"), ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"),
    ("徐", "xu"), ("孙", "sun"), ("马", "ma"), ("朱", "zhu"), ("胡", "hu"),
    ("郭", "guo"), ("何", "he"), ("林", "lin"), ("高", "gao"), ("罗", "luo"),
    ("郑", "zheng"), ("梁", "liang"), ("谢", "xie"), ("宋", "song"), ("唐", "tang"),
    ("许", "xu"), ("韩", "han"), ("冯", "feng"), ("邓", "deng"), ("曹", "cao"),
    ("彭", "peng"), ("曾", "zeng"), ("萧", "xiao"), ("田", "tian"), ("董", "dong"),
    ("潘", "pan"), ("袁", "yuan"), ("蔡", "cai"), ("蒋", "jiang"), ("余", "yu"),
    ("杜", "du"), ("叶", "ye"), ("程", "cheng"), ("魏", "wei"), ("苏", "su"),
    ("吕", "lv"), ("丁", "ding"), ("任", "ren"), ("沈", "shen"), ("欧阳", "ouyang"),
    ("司马", "sima"), ("上官", "shangguan"),
]
GIVEN = [
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"),
    ("丽", "li"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"),
    ("勇", "yong"), ("艳", "yan"), ("杰", "jie"), ("娟", "juan"), ("涛", "tao"),
    ("明", "ming"), ("超", "chao"), ("秀", "xiu"), ("霞", "xia"), ("平", "ping"),
    ("刚", "gang"), ("英", "ying"), ("华", "hua"), ("玉", "yu"), ("萍", "ping"),
    ("红", "hong"), ("鹏", "peng"), ("辉", "hui"), ("婷", "ting"), ("雪", "xue"),
    ("琳", "lin"), ("晨", "chen"), ("宇", "yu"), ("浩", "hao"), ("子", "zi"),
    ("轩", "xuan"), ("梓", "zi"), ("涵", "han"), ("欣", "xin"), ("怡", "yi"),
    ("诗", "shi"), ("雨", "yu"), ("嘉", "jia"), ("思", "si"), ("博", "bo"),
    ("文", "wen"), ("睿", "rui"), ("佳", "jia"), ("一", "yi"), ("可", "ke"),
    ("天", "tian"), ("晓", "xiao"), ("俊", "jun"), ("志", "zhi"), ("建", "jian"),
    ("海", "hai"), ("晶", "jing"), ("春", "chun"), ("蕾", "lei"), ("然", "ran"),
]
EN_FIRST = [
    "Ada", "Alice", "Amy", "Ben", "Chloe", "Cindy", "David", "Emily", "Eric",
    "Frank", "Grace", "Helen", "Henry", "Iris", "Jack", "Jason", "Kevin", "Leo",
    "Lily", "Linda", "Mia", "Michael", "Nina", "Oscar", "Peter", "Ruby", "Sam",
    "Sophia", "Tina", "Tom", "Vicky", "William", "Zoe",
]
EN_LAST = [
    "Chen", "Wang", "Li", "Zhang", "Liu", "Lin", "Wong", "Ng", "Lee", "Smith",
    "Johnson", "Brown", "Garcia", "Miller", "Davis", "Taylor",
]
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
PHONE_PREFIXES = ["138", "139", "136", "135", "186", "187", "150", "158", "177", "199"]

# (value, cumulative weight) tables, drawn with one random() each.
def cumulative(pairs):
    total = float(sum(w for _, w in pairs))
    out, acc = [], 0.0
    for v, w in pairs:
        acc += w / total
        out.append((acc, v))
    out[-1] = (1.0000001, out[-1][1])
    return out

CITIES = cumulative([
    ("Shanghai", 22), ("Beijing", 16), ("Hangzhou", 12), ("Shenzhen", 12),
    ("Guangzhou", 10), ("Chengdu", 8), ("Nanjing", 6), ("Suzhou", 5),
    ("Wuhan", 4), ("Tianjin", 3), ("Xi'an", 2),
])
LEVELS = cumulative([("standard", 60), ("silver", 22), ("gold", 13), ("platinum", 5)])
SOURCES = cumulative([
    ("wechat_ad", 25), ("douyin_ad", 15), ("website", 20), ("offline_event", 10),
    ("referral", 12), ("tmall", 10), ("xiaohongshu", 8),
])
TIMEZONES = cumulative([("", 88), ("Asia/Shanghai", 8), ("America/Los_Angeles", 2),
                        ("Asia/Singapore", 1), ("Europe/London", 1)])
LTV_BY_LEVEL = {"standard": 800, "silver": 4000, "gold": 12000, "platinum": 40000}

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

HEADER = ("id,name,email,phone,wecom_external_userid,timezone,created_at,"
          "last_active_at,tags,city,level,source,lifetime_value\n")

DAY = 86400
OFFSET = 8 * 3600  # timestamps are written in +08:00


def pick(table, r):
    for acc, v in table:
        if r < acc:
            return v
    return table[-1][1]


def ref_epoch(date):
    """Midnight of the reference date in +08:00, as Unix seconds."""
    t = time.strptime(date, "%Y-%m-%d")
    import calendar
    return calendar.timegm(t) - OFFSET


def rfc3339(epoch, gmtime=time.gmtime):
    t = gmtime(epoch + OFFSET)
    return "%04d-%02d-%02dT%02d:%02d:%02d+08:00" % t[:6]


def generate(out, rows, seed, ref):
    rng = random.Random(seed)
    rnd = rng.random
    randrange = rng.randrange
    choice = rng.choice
    n_sur, n_given = len(SURNAMES), len(GIVEN)
    n_first, n_last = len(EN_FIRST), len(EN_LAST)
    buf = []
    out.write(HEADER)
    for i in range(1, rows + 1):
        cid = "c%07d" % i
        # --- name and the e-mail local part derived from it
        if rnd() < 0.72:
            s, sp = SURNAMES[randrange(n_sur)]
            g, gp = GIVEN[randrange(n_given)]
            if rnd() < 0.7:
                g2, gp2 = GIVEN[randrange(n_given)]
                g += g2
                gp += gp2
            name = s + g
            local = sp + "." + gp if rnd() < 0.5 else gp + sp
        else:
            first = EN_FIRST[randrange(n_first)]
            last = EN_LAST[randrange(n_last)]
            name = first + " " + last
            local = (first + "." + last).lower()
        r = rnd()
        email = "" if r < 0.05 else "%s%d@%s" % (local, i, EMAIL_DOMAINS[i & 3])
        phone = "" if rnd() < 0.03 else "+86%s%08d" % (PHONE_PREFIXES[randrange(10)], randrange(100000000))
        has_wecom = rnd() < 0.35
        wecom = ("wm" + "".join([choice(ALNUM) for _ in range(26)])) if has_wecom else ""
        tz = pick(TIMEZONES, rnd())
        # --- time: created up to 400 days ago, active within the last 120 days
        created = ref - randrange(400 * DAY)
        if rnd() < 0.08:
            last_active = ""
        else:
            lo = max(created, ref - 120 * DAY)
            last_active = rfc3339(lo + randrange(max(1, ref - lo)))
        # --- segmentation
        level = pick(LEVELS, rnd())
        tags = []
        if level in ("gold", "platinum") and rnd() < 0.6:
            tags.append("vip")
        if rnd() < 0.40:
            tags.append("newsletter")
        if rnd() < 0.05:
            tags.append("do-not-disturb")
        if has_wecom:
            tags.append("wecom-lead")
        if rnd() < 0.15:
            tags.append("trial")
        if rnd() < 0.30:
            tags.append("customer")
        city = pick(CITIES, rnd())
        source = pick(SOURCES, rnd())
        ltv = "%.2f" % (rnd() * LTV_BY_LEVEL[level]) if "customer" in tags or level != "standard" else "0"
        buf.append(",".join((
            cid, name, email, phone, wecom, tz, rfc3339(created), last_active,
            ";".join(tags), city, level, source, ltv,
        )))
        if len(buf) >= 20000:
            out.write("\n".join(buf))
            out.write("\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf))
        out.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=3000, help="contacts to write (default 3000)")
    p.add_argument("--seed", type=int, default=20261101, help="random seed (default 20261101)")
    p.add_argument("--ref-date", default="2026-11-01",
                   help="YYYY-MM-DD the data is relative to (default 2026-11-01, +08:00)")
    p.add_argument("--out", default="-", help="output file, - for stdout (default)")
    a = p.parse_args()
    if a.rows < 0:
        p.error("--rows must be >= 0")
    ref = ref_epoch(a.ref_date)
    started = time.time()
    if a.out == "-":
        generate(sys.stdout, a.rows, a.seed, ref)
    else:
        with open(a.out, "w", encoding="utf-8", newline="") as f:
            generate(f, a.rows, a.seed, ref)
        print("wrote %d contacts to %s in %.1fs" % (a.rows, a.out, time.time() - started),
              file=sys.stderr)


if __name__ == "__main__":
    main()
