"""Scenario ``slow``: one device stops reading in a busy group; the others must not notice.

``--members`` users (100: chatd's default group cap) share one group. All but one are healthy
devices in load-client processes (``bench/slowclient.py``) that send to the group at
``--rate`` msgs/s in all (open loop, round-robin) and read everything; each message is
delivered to every other member. The last member is a raw WebSocket in the bench process
that reads normally for ``--stall-at`` seconds, then stops calling ``recv`` (it keeps sending
an application ping every 10 s, so it is not closed for silence). The server must close it
with 1008 once its outbound queue passes ``limits.outbound_queue_bytes`` (1 MiB) or its socket
has taken nothing for ``limits.write_stall_timeout`` (10 s), whichever comes first.
``--reconnect-after`` seconds after that close the device reads what is left on its old
socket, reconnects with ``hello since=<the last inbox seq it read>`` and reads the replay and
the live traffic to the end.

Recorded, every ``--sample`` seconds: server RSS, bytes in the server's WebSocket output
buffers (``chatd_outbound_queued_bytes``) and in the stalled socket's receive queue
(``FIONREAD``), the overflow and write-stall counters; per second: the healthy devices'
send->deliver count, p99 and max (100 us bins, merged over processes). Checked at the end:
the stalled device's inbox seqs over both connections are exactly 1..head (a fresh hello's
``inbox_head``): nothing lost, nothing twice, in order. Goals (issue 16): healthy p99 < 100 ms
in every second, the stalled device closed, server RSS growth < 50 MB, the replay check.
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import os
import re
import socket
import struct
import termios
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

from bench import fanout, wire
from bench.fleet import Fleet
from bench.loadclient import monotonic_ns
from bench.procs import CpuMeter, rss_kib
from bench.run import CLIENT_CPU, Run, settle
from bench.slowclient import BIN_US

PING_EVERY = 10.0
GOAL_P99_MS = 100.0
GOAL_RSS_MB = 50.0


class RawDevice:
    """A chatd device on a plain blocking socket, read by a thread while ``reading`` is set.

    It records the inbox seq of every ``msg`` it reads (``seqs``) and the close code the
    server sent (``close_code``; 1006 for an end of stream without one)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.sock: socket.socket | None = None
        self.buf = b""
        self.seqs: list[int] = []
        self.close_code: int | None = None
        self.welcome: dict[str, Any] = {}
        self.synced_head: int | None = None
        self.reading = threading.Event()
        self.stop = threading.Event()
        self.ended = threading.Event()
        self._thread: threading.Thread | None = None

    def connect(self, since: int | None = None) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(wire.upgrade_request(self.host, self.port, "/v1/ws", "chatd.v1.msgpack"))
        data = b""
        while (parsed := wire.split_response(data)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("closed during the upgrade")
            data += chunk
        status, self.buf = parsed
        if status != 101:
            raise RuntimeError(f"upgrade answered {status}")
        hello: dict[str, Any] = {"type": "hello", "token": self.token}
        if since is not None:
            hello["since"] = since
        sock.sendall(wire.client_frame(msgpack.packb(hello)))
        self.sock, self.close_code, self.ended = sock, None, threading.Event()
        while not self.welcome or self.welcome.get("_conn") != id(sock):
            self._read_once()
            if self.close_code is not None:
                raise RuntimeError(f"closed before welcome ({self.close_code})")
        sock.settimeout(0.2)
        self.reading.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _handle(self, frames: list[tuple[int, bytes]]) -> None:
        for opcode, payload in frames:
            if opcode == wire.OP_CLOSE:
                self.close_code = wire.close_code(payload)
                return
            if opcode != wire.OP_BINARY:
                continue
            frame = msgpack.unpackb(payload)
            kind = frame.get("type")
            if kind == "msg":
                self.seqs.append(frame["inbox"])
            elif kind == "welcome":
                self.welcome = {**frame, "_conn": id(self.sock)}
            elif kind == "synced":
                self.synced_head = frame["head"]

    def _read_once(self) -> bool:
        """One recv; False at the end of the stream."""
        assert self.sock is not None
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            return True
        except OSError:
            data = b""
        if not data:
            if self.close_code is None:
                self.close_code = 1006
            return False
        frames, self.buf = wire.server_frames(self.buf + data)
        self._handle(frames)
        return self.close_code is None

    def _run(self) -> None:
        assert self.sock is not None
        last_ping = time.monotonic()
        try:
            while not self.stop.is_set():
                if time.monotonic() - last_ping >= PING_EVERY:
                    last_ping = time.monotonic()
                    try:
                        self.sock.sendall(wire.client_frame(msgpack.packb({"type": "ping"})))
                    except OSError:
                        pass
                if not self.reading.is_set():
                    time.sleep(0.05)
                    continue
                if not self._read_once():
                    break
        finally:
            self.ended.set()

    def queued(self) -> int:
        """Bytes waiting in this socket's receive queue (read by nobody while stalled)."""
        if self.sock is None or self.sock.fileno() < 0:
            return 0
        try:
            buf = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", buf)[0])

    def read_to_end(self, timeout: float = 30.0) -> None:
        """Read what the old connection still holds, until its close (or end of stream)."""
        self.reading.set()
        self.ended.wait(timeout)

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.sock is not None:
            self.sock.close()


class Metrics:
    """``GET /metrics`` over one kept-alive connection (accepted once, however busy)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def read(self) -> dict[str, float]:
        self.conn.request("GET", "/metrics")
        text = self.conn.getresponse().read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+([-+\d.eE]+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def close(self) -> None:
        self.conn.close()


def merge_rows(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per second: count, p50/p99 (upper bound of the 100 us bin) and max, in ms."""
    seconds: dict[int, list[Any]] = {}
    for reply in replies:
        for sec, count, max_us, bins in reply["rows"]:
            row = seconds.setdefault(sec, [0, 0, {}])
            row[0] += count
            row[1] = max(row[1], max_us)
            for b, n in bins.items():
                row[2][int(b)] = row[2].get(int(b), 0) + n
    out = []
    for sec, (count, max_us, bins) in sorted(seconds.items()):
        out.append(
            {
                "second": sec,
                "deliveries": count,
                "p50_ms": _quantile(bins, count, 0.50),
                "p99_ms": _quantile(bins, count, 0.99),
                "max_ms": max_us / 1000,
            }
        )
    return out


def _quantile(bins: dict[int, int], count: int, q: float) -> float:
    need, seen = q * count, 0
    for b in sorted(bins):
        seen += bins[b]
        if seen >= need:
            return (b + 1) * BIN_US / 1000
    return 0.0


def _overall(replies: list[dict[str, Any]]) -> dict[str, float]:
    bins: dict[int, int] = {}
    count, max_us = 0, 0
    for reply in replies:
        for _, n, m, bs in reply["rows"]:
            count += n
            max_us = max(max_us, m)
            for b, c in bs.items():
                bins[int(b)] = bins.get(int(b), 0) + c
    return {
        "deliveries": count,
        "p50_ms": _quantile(bins, count, 0.5),
        "p99_ms": _quantile(bins, count, 0.99),
        "p999_ms": _quantile(bins, count, 0.999),
        "max_ms": max_us / 1000,
    }


def rss_parts(pid: int) -> dict[str, int]:
    """RssAnon (heap: what queued output costs) and RssFile (mapped file pages: LMDB's map,
    which grows with the data written) of ``pid``, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def replay_check(seqs: list[int], head: int) -> dict[str, Any]:
    """The stalled device's seqs over both connections against its inbox head."""
    seen: set[int] = set()
    dups = [s for s in seqs if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
    missing = sorted(set(range(1, head + 1)) - seen)
    in_order = all(a < b for a, b in zip(seqs, seqs[1:], strict=False))
    return {
        "head": head,
        "received": len(seqs),
        "lost": len(missing),
        "duplicated": len(dups),
        "in_order": in_order,
        "lost_sample": missing[:20],
        "ok": not missing and not dups and in_order and len(seqs) == head,
    }


def run(run_: Run, args: argparse.Namespace) -> dict[str, Any]:
    target = run_.start("chatd")
    assert target.http_url is not None and target.pid is not None
    names = [f"slow{i:03d}" for i in range(args.members)]
    tokens = target.tokens(names)
    channels = fanout.make_groups(target.http_url, tokens, [names])
    if isinstance(channels, str):
        return {"skipped": channels}
    (channel,) = channels
    run_.pin_server(target)
    fleet = Fleet(
        run_.procs,
        run_.workdir,
        host=target.host,
        port=target.port,
        path=target.path,
        clients=args.clients,
        cpus=CLIENT_CPU if run_.pinned else None,
        max_secs=args.duration + 300,
        module="bench.slowclient",
    )
    metrics = Metrics(target.http_url)
    stalled = RawDevice(target.host, target.port, tokens[names[-1]])
    try:
        healthy = [(tokens[u], channel) for u in names[:-1]]
        connect = fleet.connect(healthy)  # type: ignore[arg-type]
        run_.log(f"chatd: {connect['ok']}/{len(healthy)} healthy devices, group {channel}")
        fleet.ask_all({"cmd": "heartbeat", "interval": 10.0, "kind": "ws"}, 30)
        stalled.connect()
        settle(args.settle)
        rss0 = rss_kib(target.pid)
        parts0 = rss_parts(target.pid)
        load0 = os.getloadavg()
        busy0 = machine_busy()
        ours = CpuMeter([target.pid, *fleet.pids, os.getpid()]).start()
        m0 = metrics.read()
        t0 = monotonic_ns()
        fleet.ask_all({"cmd": "mark", "t0_ns": t0}, 30)
        cmd = {
            "cmd": "rate",
            "rate": args.rate / len(fleet.clients),
            "warmup": 0.0,
            "duration": args.duration,
            "body": args.body,
            "drain": 5,
        }
        cpu = CpuMeter([target.pid]).start()
        fleet.tell([cmd] * len(fleet.clients))
        samples, events = _watch(run_, args, target.pid, metrics, stalled, t0, m0)
        replies = fleet.collect(args.duration + 60)
        used = cpu.stop()
        ours_used = ours.stop()
        other_cpu_pct = (machine_busy() - busy0 - ours_used["cpu_s"]) / ours_used["secs"] * 100
        load1 = os.getloadavg()
        series = fleet.ask_all({"cmd": "series"}, 60)
        time.sleep(1.0)  # the last live messages reach the stalled device's new connection
        stalled.close()
        head = _inbox_head(target.host, target.port, tokens[names[-1]])
        check = replay_check(stalled.seqs, head)
        status = fleet.status()
    finally:
        stalled.close()
        metrics.close()
        fleet.close()
    log_errors = _log_errors(target.proc.log) if target.proc is not None else []
    run_.stop(target)
    seconds = merge_rows(series)
    overall = _overall(series)
    sent = sum(r["window"]["sent"] for r in replies)
    acked = sum(r["window"]["acked"] for r in replies)
    rss_max = max(s["rss_kib"] for s in samples)
    growth_mb = (rss_max - rss0) * 1024 / 1e6
    anon_growth_mb = (max(s["rss_anon_kib"] for s in samples) - parts0["RssAnon"]) * 1024 / 1e6
    file_growth_mb = (max(s["rss_file_kib"] for s in samples) - parts0["RssFile"]) * 1024 / 1e6
    stall_s = events.get("stall_s") or 0.0
    full = [s["t"] for s in samples if s["t"] > stall_s and s["server_queued"] > 0]
    events["server_queue_first_s"] = full[0] if full else None
    worst = max((s["p99_ms"] for s in seconds if s["deliveries"]), default=0.0)
    closed_at = events.get("closed_s")
    goals = {
        "healthy_p99_every_second<100ms": {"value": worst, "met": worst < GOAL_P99_MS},
        "stalled_closed": {
            "value": events.get("close_kind"),
            "after_stall_s": None if closed_at is None else closed_at - events["stall_s"],
            "met": closed_at is not None,
        },
        "rss_anon_growth<50MB": {
            "value": anon_growth_mb,
            "rss_growth_mb": growth_mb,
            "rss_file_growth_mb": file_growth_mb,
            "met": anon_growth_mb < GOAL_RSS_MB,
        },
        "replay_exactly_once": {"value": check, "met": check["ok"]},
    }
    summary = {
        "rate": args.rate,
        "sent": sent,
        "acked": acked,
        "healthy_overall": overall,
        "healthy_worst_second_p99_ms": worst,
        "stall_s": events.get("stall_s"),
        "closed_s": closed_at,
        "close_kind": events.get("close_kind"),
        "close_code_seen_by_client": events.get("close_code"),
        "queued_bytes_max": max(s["server_queued"] for s in samples),
        "rss0_mib": rss0 / 1024,
        "rss_growth_mb": growth_mb,
        "rss_anon_growth_mb": anon_growth_mb,
        "rss_file_growth_mb": file_growth_mb,
        "server_cpu_pct": used["cpu_pct"],
        "other_cpu_pct": other_cpu_pct,
        "loadavg_start_end": [load0[0], load1[0]],
        "server_log_errors": len(log_errors),
        "goals": goals,
    }
    after = goals["stalled_closed"]
    run_.log(
        f"chatd: healthy p99 {overall['p99_ms']:.1f} ms (worst second {worst:.1f} ms), "
        f"max {overall['max_ms']:.1f} ms; stalled closed by {events.get('close_kind')} "
        f"{after['after_stall_s']} s after it stopped reading; RSS +{growth_mb:.1f} MB "
        f"(RssAnon +{anon_growth_mb:.1f} MB); other CPU {other_cpu_pct:.0f}%; "
        f"replay {check}"
    )
    return {
        "label": target.label,
        "connect": connect,
        "seconds": seconds,
        "samples": samples,
        "events": events,
        "replay": check,
        "fleet_status": status,
        "replies": [
            {k: v for k, v in r.items() if k not in ("ack_us", "deliver_us")} for r in replies
        ],
        "server_log_sample": log_errors[:10],
        "summary": summary,
    }


def _watch(
    run_: Run,
    args: argparse.Namespace,
    pid: int,
    metrics: Metrics,
    stalled: RawDevice,
    t0: int,
    m0: dict[str, float],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample until the traffic ends; stall the device, see it closed, reconnect it."""
    samples: list[dict[str, Any]] = []
    events: dict[str, Any] = {}
    end = args.duration
    while (now := (monotonic_ns() - t0) / 1e9) < end:
        if "stall_s" not in events and now >= args.stall_at:
            stalled.reading.clear()
            events["stall_s"] = now
            events["read_before_stall"] = len(stalled.seqs)
            run_.log(f"slow: the stalled device stops reading at {now:.1f} s")
        m = metrics.read()
        overflows = m.get("chatd_outbound_overflows_total", 0) - m0.get(
            "chatd_outbound_overflows_total", 0
        )
        stalls = m.get("chatd_write_stalls_total", 0) - m0.get("chatd_write_stalls_total", 0)
        if "closed_s" not in events and (overflows or stalls):
            events["closed_s"] = now
            events["close_kind"] = "outbound queue overflow" if overflows else "write stall"
            run_.log(f"slow: closed ({events['close_kind']}) at {now:.1f} s")
        if (
            "reconnect_s" not in events
            and "closed_s" in events
            and now >= events["closed_s"] + args.reconnect_after
        ):
            stalled.read_to_end()
            events["close_code"] = stalled.close_code
            events["read_on_old_connection"] = len(stalled.seqs)
            since = stalled.seqs[-1] if stalled.seqs else 0
            stalled.close()
            stalled.stop.clear()
            stalled.connect(since=since)
            events["reconnect_s"] = (monotonic_ns() - t0) / 1e9
            events["since"] = since
            run_.log(f"slow: reconnected with since={since} at {events['reconnect_s']:.1f} s")
        samples.append(
            {
                "t": now,
                "rss_kib": rss_kib(pid),
                "rss_anon_kib": rss_parts(pid).get("RssAnon", 0),
                "rss_file_kib": rss_parts(pid).get("RssFile", 0),
                "server_queued": m.get("chatd_outbound_queued_bytes", 0),
                "client_recv_queue": stalled.queued(),
                "overflows": overflows,
                "stalls": stalls,
                "websockets": m.get("chatd_websockets", 0),
            }
        )
        time.sleep(args.sample)
    return samples, events


def _inbox_head(host: str, port: int, token: str) -> int:
    """The stalled user's inbox head, from a fresh connection's ``welcome``."""
    probe = RawDevice(host, port, token)
    probe.connect()
    head = int(probe.welcome["inbox_head"])
    probe.close()
    return head


def _log_errors(path: Path) -> list[str]:
    marks = ("ERROR", "CRITICAL", "Traceback")
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if any(m in line for m in marks)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--members", type=int, default=100, help="group members, 1 stalled (100)")
    p.add_argument("--rate", type=float, default=1000.0, help="group msgs/s in all (1000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (60)")
    p.add_argument("--body", type=int, default=32, help="message body characters (32)")
    p.add_argument(
        "--stall-at", type=float, default=10.0, help="seconds before it stops reading (10)"
    )
    p.add_argument(
        "--reconnect-after",
        type=float,
        default=3.0,
        help="seconds after its close that it reconnects with since (3)",
    )
    p.add_argument("--sample", type=float, default=0.5, help="sampling period, seconds (0.5)")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    from bench.plots import _title

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    secs = result["seconds"]
    xs = [s["second"] + 0.5 for s in secs]
    ax = axes[0]
    ax.plot(xs, [s["p99_ms"] for s in secs], "o-", ms=3, label="healthy p99")
    ax.plot(xs, [s["max_ms"] for s in secs], ".-", ms=3, alpha=0.6, label="healthy max")
    ax.axhline(GOAL_P99_MS, color="red", ls=":", label="goal: p99 < 100 ms")
    ax.set_yscale("log")
    ax.set_ylabel("send->deliver (ms)")
    samples = result["samples"]
    ts = [s["t"] for s in samples]
    axes[1].plot(ts, [s["server_queued"] / 1024 for s in samples], label="server output buffers")
    axes[1].plot(
        ts, [s["client_recv_queue"] / 1024 for s in samples], label="stalled socket's recv queue"
    )
    axes[1].axhline(1024, color="red", ls=":", label="limits.outbound_queue_bytes")
    axes[1].set_ylabel("queued (KiB)")
    axes[2].plot(ts, [s["rss_kib"] / 1024 for s in samples], color="tab:purple", label="RSS")
    axes[2].plot(ts, [s["rss_anon_kib"] / 1024 for s in samples], label="RssAnon (heap)")
    axes[2].plot(ts, [s["rss_file_kib"] / 1024 for s in samples], label="RssFile (LMDB map)")
    axes[2].set_ylabel("server RSS (MiB)")
    axes[2].set_xlabel("seconds since the traffic started")
    events = result["events"]
    for ax in axes:
        for key, color, label in (
            ("stall_s", "tab:orange", "stops reading"),
            ("closed_s", "tab:red", "closed 1008"),
            ("reconnect_s", "tab:green", "reconnects with since"),
        ):
            if events.get(key) is not None:
                ax.axvline(events[key], color=color, ls="--", alpha=0.7, label=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    s = result["summary"]
    text = (
        f"{s['rate']:.0f} msgs/s to {result['args']['members']} members; healthy p99 "
        f"{s['healthy_overall']['p99_ms']:.1f} ms; stalled closed: {s['close_kind']}; "
        f"RssAnon +{s['rss_anon_growth_mb']:.1f} MB; replay ok: {result['replay']['ok']}; "
        f"other CPU {s['other_cpu_pct']:.0f}%"
    )
    axes[0].set_title(_title(result, "Slow consumer in a group\n" + text), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
