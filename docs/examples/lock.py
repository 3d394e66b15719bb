"""A lock makes a read-modify-write of shared memory safe across processes."""

import phalanx as multiprocessing


def add(counter, lock, times):
    for _ in range(times):
        with lock:
            counter.value += 1


if __name__ == "__main__":
    lock = multiprocessing.Lock()
    counter = multiprocessing.Value("i", 0, lock=False)  # the lock above guards it
    workers = [multiprocessing.Process(target=add, args=(counter, lock, 1000)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("counter:", counter.value)
