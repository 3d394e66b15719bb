"""A Listener accepts authenticated connections; a Client connects with the same key."""

import phalanx as multiprocessing
from phalanx.connection import Client, Listener

KEY = b"a secret both sides know"


def client(address):
    with Client(address, authkey=KEY) as conn:
        conn.send({"question": "sum", "numbers": [1, 2, 3]})
        print("the client got:", conn.recv())
    try:
        Client(address, authkey=b"a wrong key")
    except multiprocessing.AuthenticationError as exc:
        print("a wrong key is refused:", type(exc).__name__)


if __name__ == "__main__":
    with Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        p = multiprocessing.Process(target=client, args=(listener.address,))
        p.start()
        with listener.accept() as conn:
            request = conn.recv()
            conn.send(sum(request["numbers"]))
        try:
            listener.accept()  # the client with the wrong key
        except multiprocessing.AuthenticationError:
            pass
        p.join()
