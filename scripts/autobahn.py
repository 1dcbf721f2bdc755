"""WebSocket conformance: the Autobahn|Testsuite fuzzingclient against chatd's echo endpoint.

Why a script of its own: Autobahn|Testsuite 0.8.2 runs only on Python 2.7, so it lives in a
virtualenv of its own (made here from pyenv's 2.7 with the pins in
scripts/autobahn-requirements.txt, in a cache directory outside the repo, once). It then

1. starts chatd (this tree, the project's Python) on a free loopback port with a temp data
   dir and a config that turns on the test-only echo endpoint (``testing.websocket_echo``,
   chatd/net/echo.py) and raises its caps for group 9's 16 MiB messages (ECHO_CONFIG below);
2. runs ``wstest -m fuzzingclient -s spec.json`` on the chosen cases;
3. prints the report's summary (reports/servers/index.json): cases per behavior, overall and
   per case group, and every case that is not OK/INFORMATIONAL;
4. stops the server it started, by PID, and looks for errors in its log.

Exit status: 0 when no case FAILED and the server logged no error, 1 otherwise, 2 when chatd
did not start, 3 when the Autobahn environment could not be set up, 77 when there is no
Python 2.7 (``--find-python2`` prints the one it would use, or exits 77).

    scripts/autobahn                      # groups 1-7, 9 and 10 (docs/conformance.md)
    scripts/autobahn --cases '1.*,5.*'    # a subset (the test suite's run)
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "autobahn-requirements.txt"
VIRTUALENV = "virtualenv==20.15.1"  # the last virtualenv that makes Python 2.7 environments
DEFAULT_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
ECHO_PATH = "/v1/testing/echo"
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
#: worse behaviors rank higher: a case counts as the worse of its behavior and behaviorClose
RANK = {"OK": 0, "INFORMATIONAL": 1, "NON-STRICT": 2, "UNIMPLEMENTED": 3, "FAILED": 4}
#: behaviorClose has values of its own: a wrong close code or an unclean close is a failed
#: closing handshake, so the case counts FAILED (as does any value this script does not know)
CLOSE_AS = {"WRONG CODE": "FAILED", "UNCLEAN": "FAILED", "FAILED BY CLIENT": "FAILED"}


def verdict(behavior: str, behavior_close: str) -> str:
    """One of BEHAVIORS for a case: the worse of its behavior and its close behavior."""
    close = CLOSE_AS.get(behavior_close, behavior_close)
    worst = max(behavior, close, key=lambda b: RANK.get(b, RANK["FAILED"]))
    return worst if worst in RANK else "FAILED"


#: The echo run's config. Production defaults stay as they are; only this run raises:
#: - limits.max_frame_bytes 1 MiB -> 16 MiB: cases 9.1.6 and 9.2.6 send 16 MiB messages;
#: - limits.outbound_queue_bytes 1 MiB -> 64 MiB: the echo of such a message is queued whole;
#: - testing.echo_max_fragments 1,024 -> 131,072: cases 9.3.1 and 9.4.1 send 4 MiB in 64-byte
#:   fragments (65,536 of them, and a last empty one).
ECHO_CONFIG = """\
[testing]
websocket_echo = true
echo_max_fragments = 131072

[limits]
max_frame_bytes = 16777216
outbound_queue_bytes = 67108864
"""
#: ``--production-limits``: the echo endpoint with chatd's default caps (what a chat client
#: gets); messages over 1 MiB are then closed 1009 (or 1008, the outbound cap) by design.
PRODUCTION_CONFIG = """\
[testing]
websocket_echo = true
"""


# -- Python 2.7 and the Autobahn environment


def is_python27(path: str) -> bool:
    try:
        out = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "2.7"


def find_python2(explicit: str | None) -> str | None:
    """The Python 2.7 to use: --python2, $CHATD_PYTHON27, python2.7 on PATH, pyenv's 2.7.x."""
    candidates = [explicit, os.environ.get("CHATD_PYTHON27"), shutil.which("python2.7")]
    roots = [os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv"), "/root/.pyenv"]
    for root in filter(None, roots):
        candidates += sorted(glob.glob(f"{root}/versions/2.7*/bin/python2.7"), reverse=True)
    for path in candidates:
        if path and is_python27(path):
            return path
    return None


def default_env() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("CHATD_AUTOBAHN_ENV") or Path(cache) / "chatd" / "autobahn-py27")


class SetupFailed(Exception):
    pass


def run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900)
    if result.returncode:
        tail = log.read_text()[-3000:]
        raise SetupFailed(f"{' '.join(cmd[:4])} ... exited {result.returncode}:\n{tail}")


def ensure_env(python2: str, env_dir: Path) -> Path:
    """The virtualenv with wstest in it, made (once per pin set) if missing; returns wstest."""
    pins = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    stamp = env_dir / f".chatd-autobahn-{pins}"
    wstest = env_dir / "bin" / "wstest"
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{env_dir}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: one installs, the other waits
        if stamp.exists() and wstest.exists():
            return wstest
        print(f"autobahn: setting up {env_dir} (Python 2.7: {python2})", flush=True)
        shutil.rmtree(env_dir, ignore_errors=True)
        boot = Path(f"{env_dir}.boot")
        shutil.rmtree(boot, ignore_errors=True)
        log = Path(f"{env_dir}.install.log")
        log.write_text("")
        pip = ["--disable-pip-version-check", "--no-input", "--quiet"]
        # virtualenv goes into a directory of its own: pyenv's 2.7 is left as it is.
        run_logged([python2, "-m", "pip", "install", *pip, "--target", str(boot), VIRTUALENV], log)
        env = {**os.environ, "PYTHONPATH": str(boot)}
        run_logged(
            [python2, "-m", "virtualenv", "--no-periodic-update", "-q", str(env_dir)], log, env
        )
        run_logged([str(env_dir / "bin" / "pip"), "install", *pip, "-r", str(REQUIREMENTS)], log)
        shutil.rmtree(boot, ignore_errors=True)
        if not wstest.exists():
            raise SetupFailed(f"no {wstest} after the install (see {log})")
        stamp.touch()
        return wstest


# -- chatd


def start_chatd(work: Path, echo_config: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """chatd serve with ``echo_config`` on 127.0.0.1:0; returns (process, port, log)."""
    config = work / "echo.toml"
    config.write_text(echo_config)
    log = work / "chatd.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "chatd", "serve", "--config", str(config)]
    cmd += ["--listen", "127.0.0.1:0", "--data", str(work / "data")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"chatd listening on http://127\.0\.0\.1:(\d+)", log.read_text())
        if m:
            return proc, int(m.group(1)), log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_chatd(proc)
    raise RuntimeError(f"chatd did not start:\n{log.read_text()[-3000:]}")


def stop_chatd(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (chatd drains), SIGKILL if it has not exited within 20 s: by PID only."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "level=ERROR" in line or line.startswith("Traceback")]


# -- the report


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def summarize(index: dict[str, Any]) -> dict[str, Any]:
    """Counts per behavior, overall and per case group, from the report's index.json."""
    (agent,) = index.values()
    totals: collections.Counter[str] = collections.Counter()
    groups: dict[str, collections.Counter[str]] = {}
    notable = []
    for case_id in sorted(agent, key=case_key):
        case = agent[case_id]
        worst = verdict(case["behavior"], case["behaviorClose"])
        totals[worst] += 1
        groups.setdefault(case_id.split(".")[0], collections.Counter())[worst] += 1
        if worst not in ("OK", "INFORMATIONAL"):
            notable.append(
                {
                    "case": case_id,
                    "behavior": case["behavior"],
                    "behaviorClose": case["behaviorClose"],
                    "remoteCloseCode": case.get("remoteCloseCode"),
                }
            )
    return {
        "cases": sum(totals.values()),
        "totals": {b: totals[b] for b in BEHAVIORS},
        "groups": {
            g: {b: c[b] for b in BEHAVIORS}
            for g, c in sorted(groups.items(), key=lambda gc: int(gc[0]))
        },
        "not_ok": notable,
    }


def table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (docs/conformance.md has one)."""
    head = "| group | cases | " + " | ".join(BEHAVIORS) + " |"
    lines = [head, "|" + " --- |" * (len(BEHAVIORS) + 2)]
    for group, counts in summary["groups"].items():
        row = [group, str(sum(counts.values()))] + [str(counts[b]) for b in BEHAVIORS]
        lines.append("| " + " | ".join(row) + " |")
    totals = summary["totals"]
    row = ["all", str(summary["cases"])] + [str(totals[b]) for b in BEHAVIORS]
    lines.append("| " + " | ".join(f"**{c}**" for c in row) + " |")
    return "\n".join(lines)


def git_describe() -> str:
    """The commit measured, "-dirty" when chatd/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "chatd"], cwd=ROOT, capture_output=True
        ).stdout
    except OSError:
        return "unknown"
    return head + ("-dirty" if dirty else "") if head else "unknown"


# -- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help="comma-separated case ids or patterns (default: groups 1-7, 9, 10)",
    )
    parser.add_argument("--python2", help="the Python 2.7 interpreter (default: found)")
    parser.add_argument(
        "--env",
        type=Path,
        default=default_env(),
        help="the Autobahn virtualenv (default: %(default)s)",
    )
    parser.add_argument("--keep", type=Path, help="copy index.json and summary.json here")
    parser.add_argument("--report", type=Path, help="keep the whole HTML/JSON report here")
    parser.add_argument(
        "--find-python2", action="store_true", help="print the Python 2.7 to use (exit 77 if none)"
    )
    parser.add_argument(
        "--setup-only", action="store_true", help="set up the environment, run nothing"
    )
    parser.add_argument(
        "--production-limits",
        action="store_true",
        help="keep chatd's default caps (group 9's big messages are then closed 1009)",
    )
    args = parser.parse_args()

    python2 = find_python2(args.python2)
    if python2 is None:
        print(
            "autobahn: no Python 2.7 (set CHATD_PYTHON27 or install pyenv's 2.7.18)",
            file=sys.stderr,
        )
        return 77
    if args.find_python2:
        print(python2)
        return 0
    try:
        wstest = ensure_env(python2, args.env)
    except (SetupFailed, OSError, subprocess.TimeoutExpired) as exc:
        print(f"autobahn: could not set up the Autobahn environment: {exc}", file=sys.stderr)
        return 3
    if args.setup_only:
        print(f"autobahn: {wstest} is ready")
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    echo_config = PRODUCTION_CONFIG if args.production_limits else ECHO_CONFIG
    with tempfile.TemporaryDirectory(prefix="chatd-autobahn-") as tmp:
        work = Path(tmp)
        try:
            proc, port, log = start_chatd(work, echo_config)
        except RuntimeError as exc:
            print(f"autobahn: {exc}", file=sys.stderr)
            return 2
        url = f"ws://127.0.0.1:{port}{ECHO_PATH}"
        spec = {
            "outdir": "./reports/servers",
            "servers": [{"agent": "chatd", "url": url}],
            "cases": cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (work / "spec.json").write_text(json.dumps(spec, indent=2))
        print(f"autobahn: chatd pid {proc.pid} on {url}; cases {' '.join(cases)}", flush=True)
        started = time.monotonic()
        load_before = os.getloadavg()
        try:
            with open(work / "wstest.log", "wb") as out:
                result = subprocess.run(
                    [str(wstest), "-m", "fuzzingclient", "-s", "spec.json"],
                    cwd=work,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=3600,
                )
        finally:
            stop_chatd(proc)
        seconds = time.monotonic() - started
        index_path = work / "reports" / "servers" / "index.json"
        if result.returncode or not index_path.exists():
            tail = (work / "wstest.log").read_text(errors="replace")[-3000:]
            print(f"autobahn: wstest exited {result.returncode}:\n{tail}", file=sys.stderr)
            return 1
        index = json.loads(index_path.read_text())
        summary = summarize(index)
        flag = " --production-limits" if args.production_limits else ""
        summary.update(
            commit=git_describe(),
            command=f"scripts/autobahn{flag} --cases '" + ",".join(cases) + "'",
            wstest="autobahntestsuite 0.8.2 (autobahn 0.10.9), fuzzingclient",
            endpoint=ECHO_PATH,
            echo_config=echo_config,
            seconds=round(seconds, 1),
            loadavg_1m=[round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        )
        errors = server_errors(log)
        summary["server_errors"] = errors[:20]
        if args.report:
            shutil.copytree(work / "reports", args.report, dirs_exist_ok=True)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "index.json").write_text(
                json.dumps(index, indent=1, sort_keys=True) + "\n"
            )
            (args.keep / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    print(table(summary))
    for case in summary["not_ok"]:
        behaviors = f"{case['behavior']} / close {case['behaviorClose']}"
        print(f"  {case['case']}: {behaviors} (server closed {case['remoteCloseCode']})")
    print(
        f"autobahn: {summary['cases']} cases in {seconds:.0f} s, "
        f"{summary['totals']['FAILED']} FAILED, load average {load_before[0]:.1f}"
    )
    if errors:
        print(f"autobahn: chatd logged {len(errors)} error(s):", *errors[:10], sep="\n  ")
    return 1 if summary["totals"]["FAILED"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
