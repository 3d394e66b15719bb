"""A queue carries objects between processes, first in, first out."""

import phalanx as multiprocessing


def producer(queue):
    for item in [42, None, "hello", {"a": [1, 2]}]:
        queue.put(item)


if __name__ == "__main__":
    queue = multiprocessing.Queue()
    p = multiprocessing.Process(target=producer, args=(queue,))
    p.start()
    for _ in range(4):
        print(queue.get())
    p.join()
