"""Memory diagnostics behind the admin socket's ``debug.memory`` (issue 19): off by default.

What a long-running server's memory is made of, asked of the live process without stopping it:

- the kernel's view (``VmRSS``, ``RssAnon``, ``RssFile`` from ``/proc/self/status``) and glibc's
  (``mallinfo2``: bytes in use by malloc vs held free in its arenas, which RssAnon counts too);
- ``trim``: ``malloc_trim(0)`` (free arena pages go back to the kernel) with RssAnon before and
  after, which tells heap fragmentation from live objects by measurement;
- ``gc``: counts of live objects tracked by the collector, by type (the top ``top``);
- ``tables``: the sizes of the server's per-user and per-connection tables (given by the
  server: sessions, rate-limit buckets, presence, read coalescing, the writer's id cache, ...);
- ``tracemalloc``: the top ``top`` allocation sites by growth since the previous call, if the
  server was started with ``CHATD_TRACEMALLOC=<frames>`` in its environment (tracing costs CPU
  and memory, so it is never on unless asked for at start-up).

Reading all this walks every object (``gc``) or every traced block (``tracemalloc``): seconds
of event-loop time on a big heap. It is for an operator chasing growth, not for monitoring.
"""

from __future__ import annotations

import ctypes
import gc
import os
import tracemalloc
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

#: Environment variable: start tracemalloc at start-up with this many frames per traceback.
ENV = "CHATD_TRACEMALLOC"
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _LIBC = None


def start_from_environment(env: Mapping[str, str] | None = None) -> bool:
    """Start tracemalloc if ``CHATD_TRACEMALLOC`` asks for it (a number of frames, >= 1)."""
    value = (os.environ if env is None else env).get(ENV, "")
    try:
        frames = int(value)
    except ValueError:
        return False
    if frames < 1:
        return False
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    return True


def process_status() -> dict[str, int]:
    """``STATUS_FIELDS`` of ``/proc/self/status``, in KiB."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in STATUS_FIELDS:
                    out[name + "_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def mallinfo() -> dict[str, int] | None:
    """glibc's heap figures (all arenas): ``in_use`` is malloc'd and not freed, ``free`` is
    held by malloc for reuse, ``mmapped`` is big blocks mapped on their own."""
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return None
    _LIBC.mallinfo2.restype = _MallInfo2
    m = _LIBC.mallinfo2()
    return {
        "arena": m.arena,
        "in_use": m.uordblks,
        "free": m.fordblks,
        "mmapped": m.hblkhd,
        "top_releasable": m.keepcost,
    }


def malloc_trim() -> dict[str, Any]:
    """``malloc_trim(0)``, and RssAnon before and after it (KiB)."""
    before = process_status().get("RssAnon_kib")
    released = bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False
    after = process_status().get("RssAnon_kib")
    return {"rss_anon_before_kib": before, "rss_anon_after_kib": after, "released": released}


def gc_counts(top: int) -> list[tuple[str, int]]:
    """The ``top`` most numerous object types among those the collector tracks (frozen
    objects included)."""
    counts: Counter[str] = Counter(type(o).__qualname__ for o in gc.get_objects())
    return counts.most_common(top)


class Tracer:
    """Remembers the last tracemalloc snapshot, so each report shows growth since the last."""

    def __init__(self) -> None:
        self._last: tracemalloc.Snapshot | None = None

    def growth(self, top: int) -> dict[str, Any] | None:
        if not tracemalloc.is_tracing():
            return None
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        current, peak = tracemalloc.get_traced_memory()
        stats = snap.compare_to(self._last, "lineno") if self._last else snap.statistics("lineno")
        self._last = snap
        rows = []
        for s in stats[:top]:
            frame = s.traceback[0]
            rows.append(
                {
                    "site": f"{frame.filename}:{frame.lineno}",
                    "size_kib": round(s.size / 1024, 1),
                    "size_diff_kib": round(getattr(s, "size_diff", s.size) / 1024, 1),
                    "count": s.count,
                    "count_diff": getattr(s, "count_diff", s.count),
                }
            )
        return {"traced_kib": current // 1024, "peak_kib": peak // 1024, "top": rows}


class MemoryReport:
    """The ``debug.memory`` admin op: ``tables()`` gives the server's table sizes."""

    def __init__(self, tables: Callable[[], dict[str, int]]) -> None:
        self.tables = tables
        self.tracer = Tracer()

    def __call__(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Fields of ``request``: ``top`` (rows, 25), ``collect`` (a full gc pass first),
        ``gc`` (object counts, true), ``trim`` (malloc_trim and its effect, false)."""
        top = int(request.get("top") or 25)
        out: dict[str, Any] = {}
        if request.get("collect"):
            out["collected"] = gc.collect()
        out["status"] = process_status()
        out["mallinfo"] = mallinfo()
        out["tables"] = self.tables()
        if request.get("gc", True):
            out["gc_objects"] = gc_counts(top)
            out["gc_frozen"] = gc.get_freeze_count()
        out["tracemalloc"] = self.tracer.growth(top)
        if request.get("trim"):
            out["trim"] = malloc_trim()
        return out
