#!/usr/bin/env python3
"""A real SMTP server for tests/smtp_channel.rs, built on aiosmtpd (PyPI).

    python3 tests/support/smtp_server.py --dir DIR [--advertise-auth]
        [--tls-cert CERT.pem --tls-key KEY.pem [--implicit-tls]]

Listens on 127.0.0.1 on a free port and prints `listening on PORT` once
ready. Without a certificate no STARTTLS is offered. With one, STARTTLS is
offered and required before anything but EHLO, and AUTH (accepting any
password) is offered after it; with --implicit-tls the port speaks TLS from
the first byte instead, and offers AUTH at once.

- Every message that reached the end of DATA is written to DIR/msg-NNNN.json
  (atomically) with the envelope, the reply it got (`reply`: accepted when it
  starts with 250), the raw message, its headers (decoded, unfolded) and its
  text/plain and text/html parts (decoded).
- Every command is appended to DIR/log.jsonl as {"cmd", "arg"} (AUTH without
  its argument), so a test can check that no AUTH was sent.
- DIR/rules.json, read at each RCPT and at the end of each DATA, tells the
  server to refuse chosen recipients:
      {"rcpt": {"ann@example.com": ["451 4.3.0 Try again later"]},
       "data": {"bob@example.com": "554 5.7.1 Rejected"}}
  A list gives one reply per attempt, in order, then the server accepts; a
  string is the reply to every attempt.
- --advertise-auth offers AUTH PLAIN/LOGIN without TLS (accepting any
  password), so a client that would send credentials in the clear does.
- --reject-logins refuses every login (535), as a relay does with a wrong
  password.
  A successful login is logged as {"cmd": "AUTHENTICATED", "arg": LOGIN}.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys

try:
    from aiosmtpd.smtp import SMTP, AuthResult
except ImportError:
    sys.stderr.write(
        "aiosmtpd is not installed: run `python3 -m pip install aiosmtpd` "
        "(.ci/run and test.sh install it)\n"
    )
    sys.exit(3)


class State:
    def __init__(self, folder):
        self.folder = folder
        self.seen = {}
        self.count = 0

    def log(self, cmd, arg):
        with open(os.path.join(self.folder, "log.jsonl"), "a") as f:
            f.write(json.dumps({"cmd": cmd, "arg": arg}) + "\n")

    def rule(self, stage, address):
        """The reply a rule gives at `stage` for `address`, or None."""
        try:
            with open(os.path.join(self.folder, "rules.json")) as f:
                rules = json.load(f)
        except FileNotFoundError:
            return None
        r = rules.get(stage, {}).get(address.lower())
        if r is None:
            return None
        if isinstance(r, str):
            return r
        key = (stage, address.lower())
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        return r[n] if n < len(r) else None


def parts(msg):
    out = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        out.append(
            {
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "content": part.get_content(),
            }
        )
    return out


class Handler:
    def __init__(self, state):
        self.state = state

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.state.log("EHLO", hostname)
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.state.log("MAIL", address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.state.log("RCPT", address)
        reply = self.state.rule("rcpt", address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.state.log("DATA", None)
        reply = None
        for rcpt in envelope.rcpt_tos:
            reply = reply or self.state.rule("data", rcpt)
        self.state.count += 1
        n = self.state.count
        if reply is None:
            reply = f"250 2.0.0 OK queued as Q{n:04}"
        raw = envelope.original_content.decode("utf-8", "surrogateescape")
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "reply": reply,
            "raw": raw,
            "headers": [[k, str(v)] for k, v in msg.items()],
            "parts": parts(msg),
        }
        path = os.path.join(self.state.folder, f"msg-{n:04}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return reply


class LoggingSMTP(SMTP):
    async def smtp_AUTH(self, arg):
        self.event_handler.state.log("AUTH", (arg or "").split(" ")[0])
        return await super().smtp_AUTH(arg)

    async def smtp_STARTTLS(self, arg):
        self.event_handler.state.log("STARTTLS", None)
        return await super().smtp_STARTTLS(arg)


def accept_any(state, reject=False):
    def authenticator(server, session, envelope, mechanism, auth_data):
        login = getattr(auth_data, "login", b"") or b""
        if reject:
            # aiosmtpd answers a failed login with 535 5.7.8.
            state.log("AUTH_REFUSED", login.decode("utf-8", "replace"))
            return AuthResult(success=False, handled=False)
        state.log("AUTHENTICATED", login.decode("utf-8", "replace"))
        return AuthResult(success=True)

    return authenticator


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--advertise-auth", action="store_true")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--implicit-tls", action="store_true")
    ap.add_argument("--reject-logins", action="store_true")
    args = ap.parse_args()
    handler = Handler(State(args.dir))
    loop = asyncio.get_running_loop()
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    starttls = context is not None and not args.implicit_tls

    def factory():
        return LoggingSMTP(
            handler,
            hostname="fake-smtp.test",
            tls_context=context if starttls else None,
            require_starttls=starttls,
            authenticator=accept_any(handler.state, args.reject_logins)
            if (args.advertise_auth or context is not None)
            else None,
            # Implicit TLS is TLS all along (aiosmtpd only knows STARTTLS).
            auth_require_tls=not (args.advertise_auth or args.implicit_tls),
        )

    server = await loop.create_server(
        factory,
        host="127.0.0.1",
        port=0,
        ssl=context if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
