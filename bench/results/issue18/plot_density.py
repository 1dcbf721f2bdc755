import json, glob
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
R = "/work/main/bench/results/issue18"
def dens(side):
    out = []
    for f in sorted(glob.glob(f"{R}/{side}/density-*.json")):
        s = json.load(open(f))["summary"]["by_target"]["chatd"]
        out.append((s["kib_per_conn"], s["heartbeat_cpu_pct"], s["us_per_ping"]))
    return out
b, a = dens("before"), dens("after")
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
for ax, i, title, goal in zip(axes, range(3), ["RSS per idle connection (KiB), 15k", "CPU to keep 15k alive (% of a core)", "server CPU per ping (us)"], [4.0, 3.0, 28.0]):
    xs = []
    for j, v in enumerate(b): ax.bar(j, v[i], color="#999"); xs.append(f"before {j+1}")
    for j, v in enumerate(a): ax.bar(len(b) + j, v[i], color="#2a7"); xs.append(f"after {j+1}")
    ax.axhline(goal, color="r", ls="--", lw=1, label="goal" if i < 2 else "websockets baseline (issue)")
    ax.set_xticks(range(len(xs))); ax.set_xticklabels(xs, fontsize=8); ax.set_title(title, fontsize=9); ax.legend(fontsize=7)
fig.suptitle("issue 18, loop side: b3a16fb (before) vs parked connections + fast path (after), density --pin --steps 15000", fontsize=9)
fig.tight_layout(); fig.savefig(f"{R}/issue18-density.png", dpi=110)
print("ok")
