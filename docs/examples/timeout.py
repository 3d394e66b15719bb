"""A per-task timeout: an overdue task's worker is stopped, the task fails, the pool goes on."""

import time

import phalanx as multiprocessing


def slow(seconds):
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        started = time.monotonic()
        try:
            pool.apply(slow, (60,), timeout=1)
        except multiprocessing.TimeoutError as exc:  # a TaskTimeoutError
            print(type(exc).__name__, f"after {time.monotonic() - started:.1f} s")
        print(pool.map(slow, [0.1, 0.2], timeout=10))
