"""A process runs a function; the main line and the child each say who they are."""

import os

import phalanx as multiprocessing


def info(title):
    print(title)
    print("module name:", __name__)
    print("parent process:", os.getppid())
    print("process id:", os.getpid())


def f(name):
    info("function f")
    print("hello", name)


if __name__ == "__main__":
    info("main line")
    p = multiprocessing.Process(target=f, args=("bob",))
    p.start()
    p.join()
    print("exit code:", p.exitcode)
