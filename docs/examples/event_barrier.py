"""An Event lets processes wait for a signal; a Barrier lets them meet."""

import phalanx as multiprocessing


def runner(start, barrier, results, i):
    start.wait()  # every runner waits for the starting signal
    results.put(("started", i))
    barrier.wait()  # ... and for each other, before finishing
    results.put(("finished", i))


if __name__ == "__main__":
    start = multiprocessing.Event()
    barrier = multiprocessing.Barrier(3)
    results = multiprocessing.Queue()
    runners = [
        multiprocessing.Process(target=runner, args=(start, barrier, results, i)) for i in range(3)
    ]
    for r in runners:
        r.start()
    print("nobody started before the signal:", results.empty())
    start.set()
    events = [results.get() for _ in range(6)]
    # Every runner started before any finished: the barrier held them.
    print([what for what, _ in events])
    for r in runners:
        r.join()
