"""Ctrl-C while a pool works: KeyboardInterrupt in the main process, no worker left behind."""

import os
import signal
import threading
import time

import phalanx as multiprocessing


def slow(x):
    time.sleep(30)
    return x


if __name__ == "__main__":
    # Ctrl-C in half a second (a terminal sends SIGINT to the whole process group;
    # pool workers ignore it, and the main process gets KeyboardInterrupt).
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with multiprocessing.Pool(2) as pool:
            pool.map(slow, range(4))
    except KeyboardInterrupt:
        print("KeyboardInterrupt, within a few seconds:", time.monotonic() - started < 5)
    print("workers left:", multiprocessing.active_children())
