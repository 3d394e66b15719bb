"""Workers take tasks from a JoinableQueue; join() waits until every task is done."""

import phalanx as multiprocessing


def worker(tasks, results):
    while True:
        n = tasks.get()
        if n is None:
            tasks.task_done()
            break
        results.put((n, n * n))
        tasks.task_done()


if __name__ == "__main__":
    tasks = multiprocessing.JoinableQueue()
    results = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=worker, args=(tasks, results)) for _ in range(3)]
    for w in workers:
        w.start()
    for n in range(10):
        tasks.put(n)
    for _ in workers:
        tasks.put(None)  # one stop signal per worker
    tasks.join()  # every task (and stop signal) is marked done
    squares = dict(results.get() for _ in range(10))
    print(sorted(squares.items()))
    for w in workers:
        w.join()
