"""SharedMemory: a named block of bytes; ShareableList: a list of scalars in one."""

import phalanx as multiprocessing
from phalanx import shared_memory


def double(name, size):
    block = shared_memory.SharedMemory(name)  # attach by name
    for i in range(size):
        block.buf[i] *= 2
    block.close()


def shout(name):
    items = shared_memory.ShareableList(name=name)
    items[0] = items[0].upper()
    items.shm.close()


if __name__ == "__main__":
    block = shared_memory.SharedMemory(create=True, size=4)
    block.buf[:4] = bytes([1, 2, 3, 4])
    p = multiprocessing.Process(target=double, args=(block.name, 4))
    p.start()
    p.join()
    print(list(block.buf[:4]))
    block.close()
    block.unlink()  # the creator frees it

    items = shared_memory.ShareableList(["hello", 42, 2.5, None])
    p = multiprocessing.Process(target=shout, args=(items.shm.name,))
    p.start()
    p.join()
    print(list(items))
    items.shm.close()
    items.shm.unlink()
