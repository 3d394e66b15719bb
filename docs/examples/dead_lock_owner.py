"""A process dies holding a lock: the next one to wait takes it over, with a warning."""

import os
import signal
import warnings

import phalanx as multiprocessing


def hold_and_die(lock):
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    lock = multiprocessing.Lock()
    p = multiprocessing.Process(target=hold_and_die, args=(lock,))
    p.start()
    p.join()
    print("the owner was killed:", p.exitcode == -signal.SIGKILL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("acquired:", lock.acquire(timeout=10))
    print("warned:", [w.category.__name__ for w in caught])
    lock.release()
