"""A manager's server holds Python objects; other processes use them through proxies."""

import phalanx as multiprocessing


def f(shared_dict, shared_list):
    shared_dict[1] = "1"
    shared_dict["2"] = 2
    shared_dict[0.25] = None
    shared_list.reverse()


if __name__ == "__main__":
    with multiprocessing.Manager() as manager:
        shared_dict = manager.dict()
        shared_list = manager.list(range(10))
        p = multiprocessing.Process(target=f, args=(shared_dict, shared_list))
        p.start()
        p.join()
        print(shared_dict)
        print(shared_list)
