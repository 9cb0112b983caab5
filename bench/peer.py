#!/usr/bin/env python3
"""The script a data person would write: nurture's end-to-end peer.

    python3 bench/peer.py STORE.db URL [CONCURRENCY]

Reads the contacts from a nurture SQLite store (the same rows `nurture
contacts import` wrote), renders the welcome template with Jinja2 (the same
text as bench/e2e.sh's Handlebars template) and POSTs the same JSON body
nurture's webhook channel sends to URL, CONCURRENCY requests in flight
(default 64, nurture's webhook default). No durability: nothing is recorded,
a crash loses everything, a failed request is counted and dropped.

Prints one line: `peer: N sent, F failed, S s, R msg/s`.
"""

import asyncio
import json
import sqlite3
import sys
import time
import uuid

import aiohttp
import jinja2

TEMPLATE = jinja2.Template("Welcome, {{ contact.name }}! Your account {{ contact.id }} is ready.")


def contacts(db):
    con = sqlite3.connect(db)
    cur = con.execute(
        "SELECT id, name, email, phone, attrs FROM contacts ORDER BY rowid"
    )
    for cid, name, email, phone, attrs in cur:
        yield {
            "id": cid,
            "name": name,
            "email": email,
            "phone": phone,
            "attrs": json.loads(attrs),
        }
    con.close()


async def main(db, url, concurrency):
    queue = asyncio.Queue(maxsize=concurrency * 4)
    sent = failed = 0

    async def worker(session):
        nonlocal sent, failed
        while True:
            c = await queue.get()
            if c is None:
                return
            body = {
                "message_id": str(uuid.uuid4()),
                "workflow": "welcome",
                "contact_id": c["id"],
                "to": c["email"] or "",
                "subject": None,
                "body": TEMPLATE.render(contact=c),
                "contact": c,
            }
            try:
                async with session.post(url, json=body) as r:
                    await r.read()
                    if r.status < 300:
                        sent += 1
                    else:
                        failed += 1
            except aiohttp.ClientError:
                failed += 1

    start = time.monotonic()
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        for c in contacts(db):
            await queue.put(c)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    secs = time.monotonic() - start
    rate = sent / secs if secs > 0 else 0
    print(f"peer: {sent} sent, {failed} failed, {secs:.2f} s, {rate:.0f} msg/s")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 64))
