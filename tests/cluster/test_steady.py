"""The loop-progress clock: deadlines that a stalled loop cannot trip, on MockClock (a
``jump`` moves time on without letting any task run: exactly what a stalled loop looks like
to the tasks that wake up after it)."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from chatd.cluster.steady import SteadyClock


async def test_a_free_running_loop_gets_its_deadline_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = SteadyClock(tick=0.25, cap=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with clock.fail_after(2.0):
                await trio.sleep(100)
        assert 2.0 <= trio.current_time() - start <= 2.0 + clock.tick
        nursery.cancel_scope.cancel()


async def test_a_stall_counts_for_at_most_the_cap(autojump_clock: trio.testing.MockClock) -> None:
    clock = SteadyClock(tick=0.25, cap=0.5)
    finished = trio.Event()
    cancelled: list[bool] = []

    async def call() -> None:
        try:
            with clock.fail_after(2.0):
                await finished.wait()
        except trio.TooSlowError:
            cancelled.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        nursery.start_soon(call)
        await trio.sleep(1.0)  # 1 s of progress
        before = clock.now()
        autojump_clock.jump(30.0)  # the loop stalls for 30 s: nothing ran meanwhile
        await trio.lowlevel.checkpoint()
        await trio.sleep(clock.tick)
        assert clock.now() - before <= clock.cap + clock.tick + 1e-9
        assert clock.worst_stall >= 30.0 - clock.tick
        assert not cancelled  # the answer "arrives" after the stall: still in time
        finished.set()
        await trio.sleep(clock.tick)
        nursery.cancel_scope.cancel()
    assert not cancelled


async def test_deadlines_still_expire_after_a_stall(autojump_clock: trio.testing.MockClock) -> None:
    """A Redis that hangs is still found out: after a stall, the deadline's remaining
    progress runs down at the loop's pace."""
    clock = SteadyClock(tick=0.25, cap=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(0.3)
        with pytest.raises(trio.TooSlowError):
            with clock.fail_after(2.0):
                autojump_clock.jump(60.0)
                start = trio.current_time()
                await trio.sleep(100)
        # At most cap of the 2 s went by in the stall; the rest took real (loop) time.
        assert 2.0 - clock.cap - clock.tick <= trio.current_time() - start <= 2.0 + clock.tick
        nursery.cancel_scope.cancel()


def test_now_is_monotonic_between_ticks() -> None:
    async def main() -> None:
        clock = SteadyClock(tick=0.25, cap=0.5)
        seen = [clock.now()]
        for _ in range(20):
            await trio.sleep(0.05)
            seen.append(clock.now())
        assert seen == sorted(seen)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
