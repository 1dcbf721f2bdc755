"""One matplotlib figure per scenario, drawn from the scenario's result dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"chatd": "tab:blue", "trio": "tab:orange", "websockets": "tab:green"}


def _title(result: dict[str, Any], text: str) -> str:
    commit = (result.get("git") or {}).get("commit", "")[:8]
    pinned = "pinned" if result.get("args", {}).get("pin") else "unpinned"
    return f"{text}\n{result.get('started', '')}  commit {commit}  {pinned}"


def density(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, r in result["targets"].items():
        xs = [0] + [s["held"] for s in r["steps"]]
        ys = [(r["rss0_kib"] or 0) / 1024] + [(s["rss_kib"] or 0) / 1024 for s in r["steps"]]
        fit = r.get("fit") or {}
        per = fit.get("kib_per_conn")
        label = f"{r['label']}: {per:.1f} KiB/conn" if per is not None else r["label"]
        ax.plot(xs, ys, "o-", color=COLORS.get(kind), label=label)
        if fit:
            proj = ", ".join(
                f"{int(n) // 1000}k: {g:.1f} GiB" for n, g in fit["projected_gib"].items()
            )
            ax.plot([], [], " ", label=f"   projected {proj}")
    ax.set_xlabel("idle authenticated connections")
    ax.set_ylabel("server RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(result, "Server RSS vs connections"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def relay(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, r in result["targets"].items():
        runs = r["windows"]
        ws = [w["window"] for w in runs]
        ax.plot(
            ws,
            [w["acked_per_s"] for w in runs],
            "o-",
            color=COLORS.get(kind),
            label=f"{r['label']} acked",
        )
        ax.plot(
            ws,
            [w["delivered_per_s"] for w in runs],
            "x--",
            color=COLORS.get(kind),
            alpha=0.6,
            label=f"{r['label']} delivered",
        )
    ax.set_xscale("log", base=2)
    windows = sorted({w["window"] for r in result["targets"].values() for w in r["windows"]})
    ax.set_xticks(windows, [str(w) for w in windows])
    ax.set_xlabel("window (un-acked sends per sender)")
    ax.set_ylabel("messages / s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    pairs = result.get("args", {}).get("pairs")
    ax.set_title(_title(result, f"1:1 relay throughput vs window ({pairs} pairs)"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", ":", "-."]
    for kind, r in result["targets"].items():
        for i, run in enumerate(r["rates"]):
            cdf = run.get("deliver_cdf") or []
            if not cdf:
                continue
            xs = [p[0] / 1000 for p in cdf]
            ys = [p[1] for p in cdf]
            p99 = run["deliver_us"].get("p99", 0) / 1000
            ax.plot(
                xs,
                ys,
                styles[i % len(styles)],
                color=COLORS.get(kind),
                label=f"{kind} @ {run['rate']:g}/s send->deliver (p99 {p99:.2f} ms)",
            )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of messages")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    idle = result.get("args", {}).get("idle", 0)
    ax.set_title(
        _title(result, f"send->deliver latency CDF ({idle} idle connections attached)"), fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def logins(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    r = result["targets"].get("chatd", {})
    names, values = [], []
    for key, label in (
        ("password_logins_per_s", "password logins/s"),
        ("token_reconnects_per_s", "token reconnects/s"),
    ):
        if r.get(key) is not None:
            names.append(label)
            values.append(r[key])
    ax.bar(names, values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
    ax.set_ylabel("per second")
    ax.set_title(_title(result, "chatd logins"), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fanout(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    r = result["targets"]["chatd"]
    ws = [w["window"] for w in r["windows"]]
    ax.plot(ws, [w["delivered_per_s"] for w in r["windows"]], "o-", label="deliveries/s")
    ax.plot(ws, [w["acked_per_s"] for w in r["windows"]], "x--", label="group messages/s (acked)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ws, [str(w) for w in ws])
    ax.set_xlabel("window (un-acked sends per sender)")
    ax.set_ylabel("per second")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    a = result.get("args", {})
    text = f"Group fan-out: {a.get('groups')} groups x {a.get('members')} members"
    ax.set_title(_title(result, text), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
