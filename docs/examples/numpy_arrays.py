"""Large NumPy arrays travel to and from workers in shared memory, without copies."""

import numpy as np

import phalanx as multiprocessing


def total(block):
    return float(block.sum())


def scaled(block):
    return block * 2  # a large result comes back the same way


if __name__ == "__main__":
    big = np.arange(16 * 2**20, dtype=np.float64)  # 128 MiB
    parts = np.array_split(big, 16)
    with multiprocessing.Pool(2) as pool:
        print(sum(pool.map(total, parts)) == big.sum())
        doubled = np.concatenate(pool.map(scaled, parts))
    print(doubled.shape, doubled[-1])
