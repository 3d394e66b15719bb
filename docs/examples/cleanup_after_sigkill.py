"""A program killed with SIGKILL leaves no shared memory behind: the tracker frees it."""

import os
import signal
import subprocess
import sys
import time

PROGRAM = """
import time
from phalanx import shared_memory

block = shared_memory.SharedMemory(create=True, size=1 << 20)
print(block.name, flush=True)
time.sleep(60)
"""

if __name__ == "__main__":
    program = subprocess.Popen([sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, text=True)
    name = program.stdout.readline().strip()
    path = f"/dev/shm/{name.lstrip('/')}"
    print("the program made a segment:", os.path.exists(path))
    program.send_signal(signal.SIGKILL)  # no finalizer, no atexit: it is just gone
    program.wait()
    deadline = time.monotonic() + 30
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    print("and after its SIGKILL, the segment is gone:", not os.path.exists(path))
