"""Drop-in for real programs: what code written for ``multiprocessing`` reaches for (issue 14).

Programs from the documentation's examples read ``Pool._cache`` and the
workers of ``Pool._pool``; scripts arrive on standard input; a task's
exception names the item that raised it.  Each test runs real processes
under every start method.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import _pool_targets as t
from _targets import DEADLINE, TESTS_DIR, run_python, wait_until
from phalanx.pool import Pool

# --- Pool._cache and Pool._pool, as the documentation's pool example uses them ----------------


def test_cache_holds_the_outstanding_jobs(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2)
    assert not pool._cache
    slow = pool.apply_async(time.sleep, (0.5,))
    mapped = pool.map_async(t.square, range(10))
    it = pool.imap(t.square, range(10))
    assert len(pool._cache) >= 2
    assert slow._job in pool._cache
    slow.get(timeout=DEADLINE)
    mapped.get(timeout=DEADLINE)
    assert list(it) == [x * x for x in range(10)]
    wait_until(lambda: not pool._cache, what="no outstanding job")
    results: list[Any] = []
    r = pool.apply_async(t.square, (7,), callback=results.append)
    r.wait()
    assert not pool._cache  # gone before anyone waiting on it is woken
    assert results == [49]


def test_cache_after_a_failing_map(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(2)
    with pytest.raises(ZeroDivisionError):
        pool.map(t.inverse_minus_five, range(10))
    with pytest.raises(ZeroDivisionError):
        list(pool.imap(t.inverse_minus_five, range(10)))
    wait_until(lambda: not pool._cache, what="no outstanding job")


@pytest.mark.parametrize("how", ["close", "terminate", "collected"])
def test_workers_of_a_stopped_pool_can_still_be_asked(ctx: Any, how: str) -> None:
    """``Pool._pool``'s process objects stay usable: ``is_alive()`` is False once stopped."""
    pool = ctx.Pool(2)
    workers = list(pool._pool)
    assert all(w.is_alive() for w in workers)
    pool.apply(t.square, (2,))
    if how == "close":
        pool.close()
        pool.join()
    elif how == "terminate":
        [pool.apply_async(time.sleep, (0.1,)) for _ in range(20)]
        pool.terminate()
        pool.join()
    else:  # dropped once idle (a pending result keeps its pool alive, as in the stdlib)
        with pytest.warns(ResourceWarning):
            del pool
            gc.collect()
    wait_until(lambda: not any(w.is_alive() for w in workers), what="workers gone")
    assert all(w.exitcode is not None for w in workers)


# --- a task's exception names its item (PEP 678 notes) ---------------------------------------


@pytest.mark.parametrize(
    ("call", "note"),
    [
        (lambda p: p.map(t.inverse_minus_five, range(10), chunksize=3), "item 5 of map("),
        (lambda p: list(p.imap(t.inverse_minus_five, range(10), 4)), "item 5 of imap("),
        (lambda p: list(p.imap_unordered(t.inverse_minus_five, range(10))), "item 5 of imap_"),
        (lambda p: p.starmap(t.inverse_minus_five, [(i,) for i in range(9)]), "of starmap("),
        (lambda p: p.apply(t.inverse_minus_five, (5,)), "raised by apply("),
    ],
    ids=["map", "imap", "imap_unordered", "starmap", "apply"],
)
def test_a_task_exception_names_its_item(
    make_pool: Callable[..., Pool], call: Callable[[Pool], Any], note: str
) -> None:
    pool = make_pool(2)
    with pytest.raises(ZeroDivisionError) as info:
        call(pool)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1 and note in notes[0], notes
    assert "inverse_minus_five" in notes[0]


# --- a script on standard input, under every start method ----------------------------------

STDIN_SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import phalanx as multiprocessing

def square(x):
    return x * x

def hello(q):
    q.put(("hello from", multiprocessing.current_process().name))

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        print(pool.map(square, range(5)))
    q = ctx.Queue()
    p = ctx.Process(target=hello, args=(q,))
    p.start()
    print(q.get(timeout=30)[0])
    p.join(30)
    print(p.exitcode)
"""


def test_a_script_on_standard_input(start_method: str, tmp_path: Path) -> None:
    """``python - < script``: nothing to re-import in a spawned child; functions travel
    by value (the stdlib's spawn children fail on '<stdin>')."""
    script = tmp_path / "script.py"
    script.write_text(STDIN_SCRIPT.format(tests=TESTS_DIR), encoding="utf-8")
    with open(script, encoding="utf-8") as stdin:
        result = run_python(["-", start_method], stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["[0, 1, 4, 9, 16]", "hello from", "0"]
