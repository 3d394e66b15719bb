"""A pool of worker processes: map, imap, apply_async and starmap."""

import phalanx as multiprocessing


def square(x):
    return x * x


def power(base, exponent):
    return base**exponent


if __name__ == "__main__":
    with multiprocessing.Pool(processes=4) as pool:
        print(pool.map(square, range(10)))
        print(list(pool.imap(square, range(5))))
        print(sorted(pool.imap_unordered(square, range(5))))
        result = pool.apply_async(square, (20,))
        print(result.get(timeout=10))
        print(pool.starmap(power, [(2, 3), (3, 2), (10, 0)]))
        try:
            pool.apply(power, ("x", 2))
        except TypeError as exc:
            print("a task's exception reaches the caller:", type(exc).__name__)
