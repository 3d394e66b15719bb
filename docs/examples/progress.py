"""progress=True: a progress bar on stderr (tqdm's when it is installed)."""

import time

import phalanx as multiprocessing


def work(x):
    time.sleep(0.01)
    return x


if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        print(sum(pool.map(work, range(200), progress=True)))
        print(sum(pool.imap_unordered(work, range(200), progress="squaring")))
