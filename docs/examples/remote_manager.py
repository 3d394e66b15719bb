"""A manager served over TCP: clients connect by address and key, from any machine."""

import phalanx as multiprocessing
from phalanx.managers import BaseManager, ListProxy

KEY = b"change me"
jobs = []


def get_jobs():
    return jobs


class JobManager(BaseManager):
    pass


JobManager.register("get_jobs", callable=get_jobs, proxytype=ListProxy)


def client(address):
    manager = JobManager(address=address, authkey=KEY)
    manager.connect()
    manager.get_jobs().append(f"job from {multiprocessing.current_process().name}")


if __name__ == "__main__":
    with JobManager(address=("127.0.0.1", 0), authkey=KEY) as server:
        clients = [
            multiprocessing.Process(target=client, args=(server.address,), name=f"client-{i}")
            for i in range(3)
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        print(sorted(server.get_jobs()))
