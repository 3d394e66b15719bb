"""A pipe is two connected ends: what one end sends, the other receives."""

import phalanx as multiprocessing


def child(conn):
    conn.send([42, None, "hello"])
    print("the child got:", conn.recv())
    conn.close()


if __name__ == "__main__":
    parent_conn, child_conn = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(child_conn,))
    p.start()
    print("the parent got:", parent_conn.recv())
    parent_conn.send("thanks")
    p.join()
