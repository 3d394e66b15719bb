"""A Dask LocalCluster in a process of its own, for the tests: prints its address, runs
until its standard input closes.  (Its workers can import the tests' modules: this
directory is on their path.)"""

import sys

from distributed import LocalCluster

if __name__ == "__main__":
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
    cluster.close()
