"""How the supervisor hands out chunks (``phalanx._pool.dispatch``): tables, no processes."""

from __future__ import annotations

import collections

import pytest

from phalanx._pool.dispatch import (
    CREDIT,
    FUNC_TABLE,
    FUNCS_PER_WORKER,
    MAX_INFLIGHT,
    FunctionTable,
    Pacing,
    remember,
)


def _f(x: int) -> int:
    return x


def _g(x: int) -> int:
    return -x


def test_a_function_keeps_its_number_and_two_functions_never_share_one() -> None:
    table = FunctionTable()
    assert table.number(_f) == table.number(_f)
    assert table.number(_f) != table.number(_g)


def test_a_full_table_starts_over_with_numbers_never_used_before() -> None:
    table = FunctionTable()
    funcs = [eval("lambda x: x") for _ in range(FUNC_TABLE)]  # distinct, all alive
    numbers = [table.number(func) for func in funcs]
    assert len(set(numbers)) == FUNC_TABLE
    assert table.number(funcs[0]) == numbers[0]  # known: no new number
    newcomer = table.number(_f)  # one more: the table starts over
    assert newcomer not in numbers
    again = table.number(funcs[0])
    assert again not in numbers and again != newcomer


def test_the_table_keeps_its_functions_alive_so_no_other_object_takes_their_address() -> None:
    import gc
    import weakref

    table = FunctionTable()
    func = eval("lambda x: x")
    ref = weakref.ref(func)
    number = table.number(func)
    del func
    gc.collect()
    alive = ref()
    assert alive is not None and table.lookup(alive) == number
    table.clear()
    del alive
    gc.collect()
    assert ref() is None


# (fids the worker runs, in order) -> (send?, forget) for each
@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([1], [(True, None)]),
        ([1, 1], [(True, None), (False, None)]),
        ([1, 2, 1], [(True, None), (True, None), (False, None)]),
        # Full: the least recently used goes, not the first sent.
        (
            [*range(FUNCS_PER_WORKER), 0, 99, 100],
            [(True, None)] * FUNCS_PER_WORKER + [(False, None), (True, 1), (True, 2)],
        ),
    ],
)
def test_a_worker_keeps_the_functions_it_used_last(
    runs: list[int], expected: list[tuple[bool, int | None]]
) -> None:
    known: collections.OrderedDict[int, None] = collections.OrderedDict()
    assert [remember(known, fid) for fid in runs] == expected
    assert len(known) <= FUNCS_PER_WORKER


def test_pacing_holds_two_chunks_until_it_knows_the_function() -> None:
    pacing = Pacing()
    assert pacing.limit(_f) == CREDIT
    pacing.record(_f, 1e-4)  # 0.1 ms chunks: 20 ms of work is 200 of them
    assert pacing.limit(_f) == 200
    assert pacing.limit(_g) == CREDIT  # another function: nothing known of it


@pytest.mark.parametrize(
    ("took", "limit"),
    [(10.0, CREDIT), (0.02, CREDIT), (0.002, 10), (1e-5, MAX_INFLIGHT), (0.0, MAX_INFLIGHT)],
)
def test_pacing_queues_a_few_milliseconds_of_work(took: float, limit: int) -> None:
    pacing = Pacing()
    pacing.record(_f, took)
    assert pacing.limit(_f) == limit


def test_pacing_averages_one_function_and_starts_over_for_another() -> None:
    pacing = Pacing()
    pacing.record(_f, 1e-3)
    pacing.record(_f, 2e-3)
    assert pacing.average == pytest.approx(0.8e-3 + 0.4e-3)
    pacing.record(_g, 5e-3)
    assert (pacing.func, pacing.average) == (_g, 5e-3)


@pytest.mark.parametrize("count", [1, 2, 7, 300])
def test_pacing_records_a_run_of_answers_as_that_many_single_ones(count: int) -> None:
    one_by_one, at_once = Pacing(), Pacing()
    for pacing in (one_by_one, at_once):
        pacing.record(_f, 1e-3)
    for _ in range(count):
        one_by_one.record(_f, 4e-3)
    at_once.record(_f, 4e-3, count)
    assert at_once.average == pytest.approx(one_by_one.average)
    fresh = Pacing()
    fresh.record(_g, 4e-3, count)  # nothing known before: the run's own time
    assert fresh.average == 4e-3


def test_lookup_names_a_numbered_function_and_numbers_none() -> None:
    table = FunctionTable()
    assert table.lookup(_f) is None
    number = table.number(_f)
    assert table.lookup(_f) == number
    assert table.lookup(_g) is None
    assert table.number(_g) == number + 1
