"""Coverage-guided fuzzing of chatd with atheris (libFuzzer for Python); see docs/fuzzing.md.

Each harness is a module here with a ``TestOneInput(data: bytes)`` that raises on a crash (an
exception the code under test does not document, a broken invariant, a 500, a wedge) and
returns quietly otherwise. ``python -m fuzz NAME`` runs one under libFuzzer; its seed corpus
is ``fuzz/corpus/NAME/``, kept in the repo (minimized inputs only).
"""

from __future__ import annotations

from pathlib import Path

#: harness name -> what it fuzzes (the module is ``fuzz.<name>``)
HARNESSES: dict[str, str] = {
    "frames": "client frame decoding and validation (chatd/protocol/frames.py)",
    "session": "the session state machine (chatd/protocol/session.py)",
    "http_request": "raw bytes into the HTTP layer of a real in-process server",
    "ws_bytes": "raw bytes after the WebSocket upgrade of a real in-process server",
}
ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"


def corpus_files(name: str) -> list[Path]:
    """The seed corpus of harness ``name``, in a stable order."""
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
