"""A worker killed in the middle of a task: that task fails, the pool carries on."""

import os
import signal

import phalanx as multiprocessing
from phalanx.errors import WorkerLostError


def work(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    return x * 10


if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        results = [pool.apply_async(work, (x,)) for x in range(6)]
        for x, result in enumerate(results):
            try:
                print(x, result.get(timeout=30))
            except WorkerLostError as exc:
                print(x, "failed: its worker was killed by", exc.signal)
        print("the pool carries on:", pool.map(work, [0, 1, 2]))
