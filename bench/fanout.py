"""Scenario ``fanout``: group messages to 100-member groups, deliveries per second.

``--groups`` groups of ``--members`` members (the owner included; chatd's default cap is 100),
every member online with one connection. ``--senders`` members of each group send to the group
channel with ``W`` un-acked sends each, for every ``W`` in ``--windows``; each message is
stored once with an inbox entry per member and delivered to every other member's device. Over
the measuring window: accepted msgs/s, deliveries/s, server CPU, send->deliver percentiles.
chatd only (the bare baselines have no groups); skipped while ``POST /v1/groups`` is 404.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench import traffic, users
from bench.run import Run, settle

DROP = ("deliver_cdf", "ack_cdf")


def make_groups(url: str, tokens: dict[str, str], members: list[list[str]]) -> list[str] | str:
    """Create one group per member list (first member owns it); channel ids, or a skip reason."""
    api = users.Api(url)
    channels = []
    try:
        for i, group in enumerate(members):
            status, body = api.call(
                "POST",
                "/v1/groups",
                {"name": f"bench {i}", "members": group[1:]},
                token=tokens[group[0]],
            )
            if status == 404:
                return "needs groups (issue 5): POST /v1/groups answers 404"
            if status != 201:
                raise RuntimeError(f"POST /v1/groups: {status} {body}")
            channels.append(body["channel_id"])
    finally:
        api.close()
    return channels


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    target = run_.start("chatd")
    try:
        assert target.http_url is not None
        members = [[f"g{g:03d}m{m:03d}" for m in range(args.members)] for g in range(args.groups)]
        tokens = target.tokens([u for group in members for u in group])
        channels = make_groups(target.http_url, tokens, members)
        if isinstance(channels, str):
            return {"skipped": channels}
        run_.pin_server(target)
        fleet = run_.fleet(target, args.clients)
        try:
            sessions: list[tuple[str, str | None]] = []
            for group, channel in zip(members, channels, strict=True):
                for i, user in enumerate(group):
                    sessions.append((tokens[user], channel if i < args.senders else None))
            connect = fleet.connect(sessions)
            run_.log(f"chatd: {connect['ok']}/{len(sessions)} member connections")
            settle(args.settle)
            windows = []
            for w in args.windows:
                cmd = {
                    "cmd": "relay",
                    "window": w,
                    "warmup": args.warmup,
                    "duration": args.duration,
                    "body": args.body,
                    "drain": 10,
                }
                cmds = [cmd] * len(fleet.clients)
                profile = run_.profile_path(target, f"w{w}")
                r = traffic.window(
                    run_, target, fleet, cmds, args.warmup, args.duration, 10, profile
                )
                for key in DROP:
                    r.pop(key, None)
                r["window"] = w
                r["fanout"] = r["delivered"] / r["acked"] if r["acked"] else None
                windows.append(r)
                run_.log(
                    f"chatd: W={w}: {r['acked_per_s']:,.0f} group msgs/s, "
                    f"{r['delivered_per_s']:,.0f} deliveries/s, "
                    f"server {r.get('server_cpu_pct', 0):.0f}% CPU, "
                    f"clients {r['client_cpu_pct']:.0f}%, "
                    f"p99 deliver {r['deliver_us'].get('p99', 0) / 1000:.1f} ms, "
                    f"errors {r['error_codes'] or 0}"
                )
                settle(args.settle)
        finally:
            fleet.close()
    finally:
        run_.stop(target)
    best = max(windows, key=lambda w: w["delivered_per_s"])
    summary = {
        "group_msgs_per_s": best["acked_per_s"],
        "deliveries_per_s": best["delivered_per_s"],
        "best_window": best["window"],
        "server_cpu_pct": best.get("server_cpu_pct"),
        "client_cpu_pct": best["client_cpu_pct"],
        "p99_deliver_ms": best["deliver_us"].get("p99", 0) / 1000,
        "mean_batch": best.get("mean_batch"),
    }
    result = {"label": target.label, "connect": connect, "windows": windows}
    return {"targets": {"chatd": result}, "summary": {"by_target": {"chatd": summary}}}
