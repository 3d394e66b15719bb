"""Pool(retries=1): a task whose worker dies runs once more, on another worker."""

import os
import signal

import phalanx as multiprocessing

attempts = None


def init(shared):
    global attempts
    attempts = shared


def fragile(x):
    if x == 3:
        with attempts.get_lock():
            attempts.value += 1
            first = attempts.value == 1
        if first:
            os.kill(os.getpid(), signal.SIGKILL)  # the first attempt dies
    return x * 10


if __name__ == "__main__":
    tries = multiprocessing.Value("i", 0)
    with multiprocessing.Pool(2, initializer=init, initargs=(tries,), retries=1) as pool:
        print(pool.map(fragile, range(6), chunksize=1))
    print("attempts at task 3:", tries.value)
