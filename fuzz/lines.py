"""Line coverage of a harness's corpus: which lines of chatd's modules the inputs reach.

libFuzzer's ``cov:`` counts instrumented edges across every module it instruments; this says
it per file, in lines, for the report in docs/fuzzing.md. Uninstrumented (plain ``sys.settrace``
in every thread), so it runs a corpus, not a fuzzing session:

    python -m fuzz.lines http_request .fuzz/http_request/corpus fuzz/corpus/http_request
    python -m fuzz.lines frames fuzz/corpus/frames --missing=frames.py   # and which lines not
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

from fuzz import ROOT

SOURCE = ROOT.parent / "chatd"
Hit = dict[str, set[int]]


def executable(path: Path) -> set[int]:
    """The lines of ``path`` that hold code (from its compiled code objects)."""
    lines: set[int] = set()
    stack = [compile(path.read_text(), str(path), "exec")]
    while stack:
        code = stack.pop()
        lines.update(line for _, _, line in code.co_lines() if line is not None)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return lines


def main(argv: list[str]) -> int:
    show = [a.removeprefix("--missing=") for a in argv if a.startswith("--missing=")]
    argv = [a for a in argv if not a.startswith("--missing=")]
    name, folders = argv[0], [Path(a) for a in argv[1:]]
    hits: Hit = defaultdict(set)
    prefix = str(SOURCE)

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        filename = frame.f_code.co_filename
        if not filename.startswith(prefix):
            return None
        seen = hits[filename]

        def lines(frame: types.FrameType, event: str, arg: Any) -> Any:
            if event == "line":
                seen.add(frame.f_lineno)
            return lines

        seen.add(frame.f_lineno)
        return lines

    threading.settrace(tracer)  # before the harness starts its server thread
    sys.settrace(tracer)
    module = importlib.import_module(f"fuzz.{name}")
    files = sorted({p for folder in folders for p in folder.iterdir() if p.is_file()})
    for path in files:
        module.TestOneInput(path.read_bytes())
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    print(f"{name}: {len(files)} inputs")
    total_hit = total = 0
    for filename in sorted(hits):
        path = Path(filename)
        lines = executable(path)
        hit = len(hits[filename] & lines)
        total_hit, total = total_hit + hit, total + len(lines)
        rel = path.relative_to(ROOT.parent)
        print(f"  {rel}: {hit}/{len(lines)} lines ({100 * hit / max(1, len(lines)):.0f}%)")
        if any(str(rel).endswith(part) for part in show):
            print(f"    not reached: {sorted(lines - hits[filename])}")
    print(f"  files reached: {total_hit}/{total} lines ({100 * total_hit / max(1, total):.0f}%)")
    close = getattr(module, "close", None)
    if close is not None:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
