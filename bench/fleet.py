"""A fleet of load-client processes, each bound to its own source address.

One source address gives ~28k ephemeral ports per destination, so every client process gets a
fresh loopback address (127.0.0.2, 127.0.0.3, ...: a new one for every fleet in a run, so ports
of an earlier fleet never collide). Commands go to every client at once; replies are merged.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bench.procs import ClientProc, Procs, pin, python

_addresses = itertools.count(0)


def next_source() -> str:
    return f"127.0.0.{2 + next(_addresses) % 250}"


class Fleet:
    def __init__(
        self,
        procs: Procs,
        workdir: Path,
        *,
        host: str,
        port: int,
        path: str,
        clients: int,
        cpus: set[int] | None,
        max_secs: float,
        module: str = "bench.loadclient",
    ) -> None:
        self.procs = procs
        self.clients: list[ClientProc] = []
        for i in range(clients):
            src = next_source()
            argv = [python(), "-m", module, "--host", host, "--port", str(port)]
            argv += ["--path", path, "--src", src, "--max-secs", str(max_secs)]
            proc = ClientProc(f"loadclient-{i}@{src}", argv, workdir / f"client-{src}.log")
            procs.add(proc)
            if cpus:
                pin(proc.pid, cpus)
            self.clients.append(proc)
        self.sessions = [0] * clients  # per client: sessions opened
        self.senders = [0] * clients  # per client: sessions that send (have a peer)

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.clients]

    def tell(self, cmds: list[dict[str, Any]]) -> None:
        """Send one command to each client, all at once; :meth:`collect` the replies later."""
        for client, cmd in zip(self.clients, cmds, strict=True):
            client.send(cmd)

    def collect(self, timeout: float) -> list[dict[str, Any]]:
        return [client.reply(timeout) for client in self.clients]

    def ask(self, cmds: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        self.tell(cmds)
        return self.collect(timeout)

    def ask_all(self, cmd: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return self.ask([cmd] * len(self.clients), timeout)

    def connect(
        self,
        sessions: list[tuple[str, str | None]],
        *,
        concurrency: int = 256,
        timeout: float = 300.0,
        keep_together: int = 1,
        churnable: bool = False,
    ) -> dict[str, Any]:
        """Open ``(token, peer)`` sessions spread over the clients; wait for every ``welcome``.

        Consecutive groups of ``keep_together`` sessions go to one client (a pair's sender and
        receiver share a process, so one client's latencies use one clock and one loop).
        ``churnable`` sessions (receive-only) are the ones a client's ``churn`` may reconnect.
        """
        n = len(self.clients)
        parts: list[list[tuple[str, str | None]]] = [[] for _ in range(n)]
        for i in range(0, len(sessions), keep_together):
            k = min(range(n), key=lambda j: self.sessions[j] + len(parts[j]))
            parts[k].extend(sessions[i : i + keep_together])
        cmds = [
            {
                "cmd": "connect",
                "sessions": part,
                "concurrency": concurrency,
                "timeout": 30,
                "churnable": churnable,
            }
            for part in parts
        ]
        replies = self.ask(cmds, timeout)
        failed: dict[str, int] = {}
        for i, r in enumerate(replies):
            self.sessions[i] += r["ok"]
            self.senders[i] += sum(1 for _, peer in parts[i] if peer)
            for why, count in r["failed"].items():
                failed[why] = failed.get(why, 0) + count
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": failed,
            "secs": max(r["secs"] for r in replies),
            "open": sum(r["open"] for r in replies),
        }

    def status(self) -> dict[str, Any]:
        replies = self.ask_all({"cmd": "status"}, 30)
        lost: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for r in replies:
            for code, count in r["lost"].items():
                lost[code] = lost.get(code, 0) + count
            for why, count in r["close_reasons"].items():
                reasons[why] = reasons.get(why, 0) + count
        return {
            "open": sum(r["open"] for r in replies),
            "lost": lost,
            "close_reasons": reasons,
            "hb_late_max": max(r["hb_late_max"] for r in replies),
            "pings": sum(r["pings"] for r in replies),
            "pongs": sum(r["pongs"] for r in replies),
        }

    def close(self) -> None:
        """Reset every connection, then stop the client processes."""
        try:
            self.ask_all({"cmd": "close"}, 60)
        finally:
            for client in self.clients:
                self.procs.stop(client)
