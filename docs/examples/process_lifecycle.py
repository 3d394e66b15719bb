"""A process's life: name, pid, is_alive(), terminate(), exit codes, daemons."""

import time

import phalanx as multiprocessing


def sleep_forever():
    while True:
        time.sleep(1)


def fail():
    raise SystemExit(3)


if __name__ == "__main__":
    p = multiprocessing.Process(target=sleep_forever, name="sleeper")
    print("before start:", p.name, p.is_alive(), p.exitcode)
    p.start()
    print("running:", p.is_alive(), p.pid is not None)
    p.terminate()
    p.join()
    print("terminated:", p.is_alive(), p.exitcode)  # -15: killed by SIGTERM

    q = multiprocessing.Process(target=fail)
    q.start()
    q.join()
    print("exit code of SystemExit(3):", q.exitcode)

    print("children still running:", multiprocessing.active_children())
    print("this process:", multiprocessing.current_process().name)
