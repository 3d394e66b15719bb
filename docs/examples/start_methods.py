"""The same child under each start method, chosen with a context."""

import phalanx as multiprocessing


def greet(queue, method):
    queue.put(f"hello from a child started by {method}")


if __name__ == "__main__":
    for method in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        p = ctx.Process(target=greet, args=(queue, method))
        p.start()
        print(queue.get())
        p.join()
