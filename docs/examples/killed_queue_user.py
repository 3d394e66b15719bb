"""A producer killed in the middle of its puts: every item it put arrives whole, in order."""

import queue

import phalanx as multiprocessing


def producer(q):
    i = 0
    while True:
        q.put((i, "x" * 1000))
        i += 1


if __name__ == "__main__":
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=producer, args=(q,))
    p.start()
    items = [q.get(timeout=30) for _ in range(1000)]
    p.kill()  # SIGKILL, at whatever point of put() it was
    p.join()
    while True:
        try:
            items.append(q.get(timeout=1))
        except queue.Empty:
            break
    numbers = [i for i, _ in items]
    print("in order, none lost or repeated:", numbers == list(range(len(numbers))))
    print("none torn:", all(payload == "x" * 1000 for _, payload in items))
    q.put("the queue still works")
    print(q.get(timeout=10))
