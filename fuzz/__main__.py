"""``python -m fuzz NAME``: run one harness under libFuzzer (atheris), or replay its corpus.

    python -m fuzz frames --runs 1000000          # fuzz: new inputs go to .fuzz/frames/corpus
    python -m fuzz http_request --max-time 600    # bounded in time instead
    python -m fuzz session --replay               # run every seed once, no libFuzzer
    python -m fuzz ws_bytes --merge               # minimize what was found into fuzz/corpus
    python -m fuzz frames -- -jobs=2 -dict=x      # anything after -- goes to libFuzzer

The repo's seed corpus (``fuzz/corpus/NAME``) is only read while fuzzing; what libFuzzer finds
goes to a work directory (``--work``, default ``.fuzz/``, not in git), crash inputs there too
(``crash-<sha1>``). Only chatd's own code and the protocol libraries it feeds (h11, wsproto,
msgpack's Python fallback is not used) are instrumented for coverage: instrumenting trio too
would cost speed and only measure the event loop.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from fuzz import CORPUS, HARNESSES, ROOT, corpus_files

INSTRUMENT = ["chatd", "storage", "h11", "wsproto"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("harness", choices=sorted(HARNESSES))
    parser.add_argument("--runs", type=int, default=-1, help="inputs to run (-1: no limit)")
    parser.add_argument("--max-time", type=int, default=0, help="seconds to fuzz (0: no limit)")
    parser.add_argument("--work", type=Path, default=ROOT.parent / ".fuzz")
    parser.add_argument("--replay", action="store_true", help="run the seed corpus once")
    parser.add_argument("--merge", action="store_true", help="minimize finds into the corpus")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's -seed (0: random)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Where the in-process server keeps its scratch data (fuzz/inprocess.py).
    os.environ.setdefault("CHATD_FUZZ_WORK", str(args.work))
    if args.replay:
        return replay(args.harness)
    if args.child:  # started by libFuzzer itself (-merge, -fork, -jobs): its flags as they are
        return run_child(args.harness, extra)
    return run(args, extra)


def replay(name: str) -> int:
    """Every seed once, uninstrumented: a regression test of what was ever found."""
    module = importlib.import_module(f"fuzz.{name}")
    files = corpus_files(name)
    started = time.monotonic()
    for path in files:
        try:
            module.TestOneInput(path.read_bytes())
        except Exception:
            print(f"{name}: {path} crashes", file=sys.stderr)
            raise
    close = getattr(module, "close", None)
    if close is not None:
        close()
    elapsed = time.monotonic() - started
    print(f"{name}: replayed {len(files)} inputs in {elapsed:.1f} s, 0 crashes")
    return 0


def instrumented(name: str) -> Any:
    """The harness module, with chatd and the protocol libraries instrumented for coverage."""
    import atheris  # only here: --replay works without it

    with atheris.instrument_imports(include=INSTRUMENT):
        return importlib.import_module(f"fuzz.{name}")


def launcher(work: Path, name: str) -> Path:
    """An executable that starts this harness again: libFuzzer runs its ``argv[0]`` for the
    child processes of ``-merge``, ``-fork`` and ``-jobs``, and ours is a .py file."""
    path = work / "run-child"
    path.write_text(
        f"#!/bin/sh\ncd {shlex.quote(str(ROOT.parent))} && exec {shlex.quote(sys.executable)} "
        f'-m fuzz {name} --work {shlex.quote(str(work.parent))} --child -- "$@"\n'
    )
    path.chmod(0o755)
    return path


def run_child(name: str, flags: list[str]) -> int:
    import atheris

    module = instrumented(name)
    atheris.Setup([sys.argv[0], *flags], module.TestOneInput)
    atheris.Fuzz()
    return 0


def run(args: argparse.Namespace, extra: list[str]) -> int:
    import atheris

    module = instrumented(args.harness)
    work: Path = args.work / args.harness
    found = work / "corpus"
    found.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / args.harness
    seeds.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-max_len={module.MAX_LEN}",
        f"-artifact_prefix={work}/",
        f"-timeout={getattr(module, 'TIMEOUT', 10)}",
        "-print_final_stats=1",
        f"-seed={args.seed}",
    ]
    if args.runs >= 0:
        flags.append(f"-runs={args.runs}")
    if args.max_time:
        flags.append(f"-max_total_time={args.max_time}")
    dictionary = ROOT / "dicts" / f"{args.harness}.dict"
    if dictionary.exists():
        flags.append(f"-dict={dictionary}")
    # Merge: the first directory gets the inputs of the others that add coverage.
    dirs = [seeds, found] if args.merge else [found, seeds]
    if args.merge:
        flags.append("-merge=1")
    argv0 = str(launcher(work, args.harness))
    atheris.Setup([argv0, *flags, *extra, *map(str, dirs)], module.TestOneInput)
    atheris.Fuzz()  # exits the process (libFuzzer), with 0 unless a crash was found
    return 0


if __name__ == "__main__":
    sys.exit(main())
