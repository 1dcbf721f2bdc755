"""Scenario ``logins``: password logins/s (argon2id-bound by design), token reconnects/s
(``hello`` with a valid token: TCP + WebSocket handshake + token lookup, no hashing), and chat
latency at a steady rate with and without a password-login burst running alongside."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from bench import traffic, users
from bench.run import Run, settle


def _burst(url: str, names: list[str], workers: int, out: dict[str, Any]) -> None:
    out.update(users.timed_logins(url, names, workers=workers))


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    target = run_.start("chatd")
    try:
        assert target.http_url is not None
        names = [f"login{i:04d}" for i in range(args.users)]
        senders, receivers = traffic.pair_names(args.pairs)
        tokens = target.tokens(names + senders + receivers)
        run_.pin_server(target)
        password = users.timed_logins(target.http_url, names, workers=args.workers)
        run_.log(f"password logins: {password['per_s']:.0f}/s ({password['failed']} failed)")

        rounds = []
        for _ in range(args.rounds):
            fleet = run_.fleet(target, args.clients)
            try:
                sessions: list[tuple[str, str | None]] = [
                    (tokens[names[i % len(names)]], None) for i in range(args.reconnects)
                ]
                c = fleet.connect(sessions, concurrency=args.concurrency)
                rounds.append(
                    {
                        "ok": c["ok"],
                        "secs": c["secs"],
                        "per_s": c["ok"] / c["secs"],
                        "failed": c["failed"],
                    }
                )
                run_.log(
                    f"token reconnects: {c['ok']} in {c['secs']:.2f} s "
                    f"= {c['ok'] / c['secs']:.0f}/s"
                )
            finally:
                fleet.close()
            settle(args.settle)

        fleet = run_.fleet(target, args.clients)
        try:
            traffic.connect_pairs(run_, target, fleet, tokens, args.pairs)
            settle(args.settle)
            chat = {}
            for phase in ("quiet", "login_burst"):
                cmds = [
                    {
                        "cmd": "rate",
                        "rate": share,
                        "warmup": args.warmup,
                        "duration": args.duration,
                        "body": args.body,
                    }
                    for share in traffic.share(args.rate, fleet.senders)
                ]
                burst: dict[str, Any] = {}
                thread = None
                if phase == "login_burst":
                    thread = threading.Thread(
                        target=_burst,
                        args=(target.http_url, names, args.workers, burst),
                        daemon=True,
                    )
                    thread.start()
                r = traffic.window(run_, target, fleet, cmds, args.warmup, args.duration, 10)
                if thread is not None:
                    thread.join(120)
                r.pop("ack_cdf", None)
                r.pop("deliver_cdf", None)
                r["burst"] = burst or None
                chat[phase] = r
                run_.log(f"chat {phase}: p99 deliver {r['deliver_us'].get('p99', 0) / 1000:.2f} ms")
        finally:
            fleet.close()
    finally:
        run_.stop(target)
    best = max((r["per_s"] for r in rounds), default=None)
    result = {
        "password": password,
        "reconnect_rounds": rounds,
        "chat": chat,
    }
    summary = {
        "password_logins_per_s": password["per_s"],
        "token_reconnects_per_s": best,
        "chat_p99_ms_quiet": chat["quiet"]["deliver_us"].get("p99", 0) / 1000,
        "chat_p99_ms_during_logins": chat["login_burst"]["deliver_us"].get("p99", 0) / 1000,
    }
    goals = {}
    if best is not None:
        goals["token_reconnects_per_s>=2000"] = {"value": best, "met": best >= 2000}
    return {
        "targets": {"chatd": {"label": target.label, **result, **summary}},
        "summary": {"chatd": summary, "goals": goals},
    }
