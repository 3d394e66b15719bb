"""Named shared memory (``SharedMemory``, ``ShareableList``) and the resource tracker.

Sharing with children runs under each start method.  Whatever must start
from a clean process tree (the resource tracker is per tree) runs in a fresh
interpreter: ``run_python`` puts it in a session of its own, waits for it and
for every process of that session.  The tracker itself leaves that session
(``setsid``) and reports on the inherited stderr, so reading the script's
output to EOF also waits for the tracker to have finished its cleanup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _sync_targets as targets
from _targets import (
    DEADLINE,
    finish,
    pid_exists,
    python_code,
    run_python,
    session_members,
    start,
    wait_for_json,
    wait_until,
)
from phalanx.context import BaseContext
from phalanx.shared_memory import ShareableList, SharedMemory

SHM_DIR = Path("/dev/shm")


def in_dev_shm(name: str) -> bool:
    return (SHM_DIR / name).exists()


def remove(name: str) -> None:
    try:
        (SHM_DIR / name).unlink()
    except FileNotFoundError:
        pass


def unique_name() -> str:
    return f"phx_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def segment() -> Iterator[SharedMemory]:
    shm = SharedMemory(create=True, size=1000)
    yield shm
    shm.close()
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


# --- SharedMemory -----------------------------------------------------------------------------


def test_create_and_attach_from_a_child(ctx: BaseContext, tmp_path: Path, segment: Any) -> None:
    segment.buf[:6] = b"parent"
    p = start(ctx, targets.attach_and_write, segment.name, str(tmp_path / "out"), b"child!")
    result = wait_for_json(tmp_path / "out")
    finish(p)
    assert result["name"] == segment.name
    assert result["size"] == 1000
    assert bytes.fromhex(result["head"])[:6] == b"parent"
    assert bytes(segment.buf[:6]) == b"child!"
    # The child only attached: its exit removed nothing (gh-82300).
    assert in_dev_shm(segment.name)
    again = SharedMemory(segment.name)
    assert bytes(again.buf[:6]) == b"child!"
    again.close()


def test_created_by_a_child_attached_by_the_parent(ctx: BaseContext, tmp_path: Path) -> None:
    p = start(ctx, targets.create_segment, str(tmp_path / "out"), 5000, b"made by child")
    name = wait_for_json(tmp_path / "out")["name"]
    finish(p)
    try:
        shm = SharedMemory(name)
        assert bytes(shm.buf[:13]) == b"made by child"
        assert shm.size == 5000
        shm.close()
    finally:
        remove(name)


def test_attributes_and_repr(segment: SharedMemory) -> None:
    assert re.fullmatch(r"psm_[0-9a-f]+", segment.name)
    assert not segment.name.startswith("/")
    assert in_dev_shm(segment.name)
    assert segment.size == 1000
    assert repr(segment) == f"SharedMemory({segment.name!r}, size=1000)"
    buf = segment.buf
    assert isinstance(buf, memoryview) and not buf.readonly
    assert len(buf) == 1000
    assert bytes(buf[:8]) == bytes(8)  # a new segment is zeroed
    buf[-1] = 255
    assert segment.buf[999] == 255


def test_a_chosen_name() -> None:
    name = unique_name()
    shm = SharedMemory(name, create=True, size=64)
    try:
        assert shm.name == name
        assert in_dev_shm(name)
        other = SharedMemory(name=name)
        assert other.size == 64
        other.buf[0] = 7
        assert shm.buf[0] == 7
        other.close()
    finally:
        shm.close()
        shm.unlink()
    assert not in_dev_shm(name)


def test_close_and_unlink() -> None:
    shm = SharedMemory(create=True, size=100)
    name = shm.name
    other = SharedMemory(name)
    shm.close()
    shm.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        shm.buf  # noqa: B018
    other.buf[0] = 1  # another mapping is unaffected
    shm.unlink()
    assert not in_dev_shm(name)
    with pytest.raises(FileNotFoundError):
        SharedMemory(name)
    other.buf[1] = 2  # unlinking removes the name, not the memory
    assert bytes(other.buf[:2]) == b"\x01\x02"
    other.close()


def test_a_pickled_segment_attaches_by_name(segment: SharedMemory) -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(segment))
    try:
        assert copy.name == segment.name and copy.size == segment.size
        copy.buf[0] = 42
        assert segment.buf[0] == 42
    finally:
        copy.close()


# --- SharedMemory: bad input ------------------------------------------------------------------


def test_create_with_size_zero() -> None:
    with pytest.raises(ValueError, match="'size' must be a positive number"):
        SharedMemory(create=True, size=0)
    with pytest.raises(ValueError, match="'size'"):
        SharedMemory(create=True)


@pytest.mark.parametrize("size", [-1, -4096])
def test_negative_size(size: int) -> None:
    with pytest.raises(ValueError, match=rf"\(got {size}\)"):
        SharedMemory(create=True, size=size)


def test_attach_to_a_name_that_does_not_exist() -> None:
    name = unique_name()
    with pytest.raises(FileNotFoundError, match=name):
        SharedMemory(name)
    assert not in_dev_shm(name)


def test_create_an_existing_name(segment: SharedMemory) -> None:
    with pytest.raises(FileExistsError, match=segment.name):
        SharedMemory(segment.name, create=True, size=10)
    assert segment.size == 1000  # untouched


def test_attach_without_a_name() -> None:
    with pytest.raises(ValueError, match="'name' can only be None if create=True"):
        SharedMemory()


# --- ShareableList ----------------------------------------------------------------------------

ITEMS = [7, -(2**63), 2.5, True, False, "h\u00e9llo", b"by\x00tes", None, ""]


@pytest.fixture
def sl() -> Iterator[ShareableList]:
    lst = ShareableList(ITEMS)
    yield lst
    lst.shm.close()
    lst.shm.unlink()


def test_shareable_list_items(sl: ShareableList) -> None:
    # bytes lose trailing NULs, as in the stdlib; inner NULs stay.
    assert list(sl) == ITEMS
    assert len(sl) == len(ITEMS)
    assert [type(x) for x in sl] == [type(x) for x in ITEMS]
    assert sl[0] == 7 and sl[-1] == "" and sl[-3] == b"by\x00tes" and sl[-9] == 7
    assert sl.format == "qqdxxxxxxx?xxxxxxx?8s8sxxxxxx?x8s"
    assert repr(sl) == f"ShareableList({ITEMS!r}, name={sl.shm.name!r})"


def test_shareable_list_assignment(sl: ShareableList) -> None:
    sl[0] = 1.25  # an int slot takes a float: 8 bytes either way
    sl[2] = None
    sl[3] = 99
    sl[5] = "abcdefg"  # 7 bytes: fits the 8 allocated to "héllo"
    sl[-1] = "12345678"  # "" got 8 bytes
    sl[6] = b"B"
    assert list(sl) == [1.25, -(2**63), None, 99, False, "abcdefg", b"B", None, "12345678"]
    assert sl.format.startswith("dq")


@pytest.mark.parametrize(("index", "value"), [(5, "x" * 9), (6, b"y" * 9), (-1, "z" * 9)])
def test_shareable_list_item_too_long(sl: ShareableList, index: int, value: Any) -> None:
    before = list(sl)
    with pytest.raises(ValueError, match="exceeds available storage"):
        sl[index] = value
    assert list(sl) == before


def test_shareable_list_multibyte_str_too_long() -> None:
    lst = ShareableList(["1234567"])  # 8 bytes of storage
    try:
        with pytest.raises(ValueError, match="exceeds available storage"):
            lst[0] = "\u00e9" * 5  # 5 characters, 10 bytes
    finally:
        lst.shm.close()
        lst.shm.unlink()


@pytest.mark.parametrize("index", [9, 100])
def test_shareable_list_index_error(sl: ShareableList, index: int) -> None:
    with pytest.raises(IndexError):
        sl[index]
    with pytest.raises(IndexError):
        sl[index] = 1


@pytest.mark.parametrize("index", [-10, -11])
def test_shareable_list_negative_index_error(sl: ShareableList, index: int) -> None:
    before = list(sl)
    with pytest.raises(IndexError):
        sl[index]
    with pytest.raises(IndexError):
        sl[index] = 1
    assert list(sl) == before


def test_shareable_list_count_and_index(sl: ShareableList) -> None:
    lst = ShareableList([1, "a", 1, None, 1.0, b"a"])
    try:
        assert lst.count(1) == 3  # 1 == 1.0, as for a list
        assert lst.count("a") == 1 and lst.count(b"a") == 1 and lst.count(2) == 0
        assert lst.index(None) == 3
        assert lst.index("a") == 1
        with pytest.raises(ValueError, match="not in"):
            lst.index("missing")
    finally:
        lst.shm.close()
        lst.shm.unlink()


def test_shareable_list_of_unsupported_type() -> None:
    with pytest.raises(TypeError, match="list"):
        ShareableList([[1, 2]])


def test_empty_shareable_list() -> None:
    lst = ShareableList([])
    try:
        assert len(lst) == 0 and list(lst) == [] and lst.format == ""
        with pytest.raises(IndexError):
            lst[0]
    finally:
        lst.shm.close()
        lst.shm.unlink()


def test_shareable_list_attach_by_name(sl: ShareableList) -> None:
    other = ShareableList(name=sl.shm.name)
    try:
        assert list(other) == ITEMS
        other[0] = 8
        assert sl[0] == 8
    finally:
        other.shm.close()


def test_shareable_list_attach_from_a_child(ctx: BaseContext, tmp_path: Path) -> None:
    lst = ShareableList([41, 1.5, "parent", None])
    fmt = lst.format
    try:
        p = start(ctx, targets.attach_list, lst.shm.name, str(tmp_path / "out"))
        result = wait_for_json(tmp_path / "out")
        finish(p)
        assert result == {"items": [41, 1.5, "parent", None], "len": 4, "format": fmt}
        assert list(lst) == [42, 1.5, "parent", "child"]
    finally:
        lst.shm.close()
        lst.shm.unlink()


# --- the stdlib's ShareableList: same bytes ---------------------------------------------------

STDLIB_ITEMS = [1, -7, 2.5, True, None, "h\u00e9llo w\u00f6rld", b"\x00\x01raw", ""]

# The stdlib's own tracker must neither remove a segment we own nor warn about
# one it merely attached to (gh-82300 on 3.11-3.12): unregister it.
STDLIB_READ = """
import json, sys
from multiprocessing import resource_tracker, shared_memory
sl = shared_memory.ShareableList(name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, "shared_memory")
print(json.dumps({"items": [x.hex() if isinstance(x, bytes) else x for x in sl],
                  "format": sl.format, "raw": bytes(sl.shm.buf).hex()}))
sl[0] = 100
sl[5] = "stdlib"
sl.shm.close()
"""

STDLIB_CREATE = """
import json, sys
from multiprocessing import resource_tracker, shared_memory
items = json.loads(sys.argv[1])
items[6] = bytes.fromhex(items[6])
sl = shared_memory.ShareableList(items)
resource_tracker.unregister(sl.shm._name, "shared_memory")  # the test removes it
print(json.dumps({"name": sl.shm.name, "size": sl.shm.size}))
sl.shm.close()
"""


def _decode(items: list[Any]) -> list[Any]:
    out = list(items)
    out[6] = bytes.fromhex(out[6])
    return out


def test_stdlib_reads_a_phalanx_shareable_list() -> None:
    lst = ShareableList(STDLIB_ITEMS)
    raw = bytes(lst.shm.buf)
    try:
        result = run_python(["-c", STDLIB_READ, lst.shm.name])
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        seen = json.loads(result.stdout)
        assert _decode(seen["items"]) == STDLIB_ITEMS
        assert seen["format"] == lst.format
        assert bytes.fromhex(seen["raw"]) == raw
        assert lst[0] == 100 and lst[5] == "stdlib"
    finally:
        lst.shm.close()
        lst.shm.unlink()


def test_phalanx_reads_a_stdlib_shareable_list() -> None:
    encoded = list(STDLIB_ITEMS)
    encoded[6] = encoded[6].hex()
    result = run_python(["-c", STDLIB_CREATE, json.dumps(encoded)])
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    try:
        theirs = ShareableList(name=made["name"])
        ours = ShareableList(STDLIB_ITEMS)
        try:
            assert list(theirs) == STDLIB_ITEMS
            assert theirs.format == ours.format
            assert bytes(theirs.shm.buf[: made["size"]]) == bytes(ours.shm.buf[: made["size"]])
            theirs[1] = 12345
            assert theirs[1] == 12345
        finally:
            theirs.shm.close()
            ours.shm.close()
            ours.shm.unlink()
    finally:
        remove(made["name"])


# --- the resource tracker ---------------------------------------------------------------------

# Creates segments (tracked and not), a ShareableList and some locks, starts
# a child that creates segments of its own, reports everything, then SIGKILLs
# its whole process group: nobody gets to clean up.
KILLED_TREE = """
import json, os, signal, sys, tempfile
import phalanx, _sync_targets, _targets
from phalanx import _tracker, shared_memory

if __name__ == "__main__":
    method = sys.argv[1]
    tracked = [shared_memory.SharedMemory(create=True, size=8192) for _ in range(3)]
    untracked = shared_memory.SharedMemory(create=True, size=4096, track=False)
    sl = shared_memory.ShareableList([1, "two", 3.0])
    locks = [phalanx.Lock(), phalanx.RLock(), phalanx.Semaphore(3), phalanx.Event()]
    locks[0].acquire()
    report = os.path.join(tempfile.mkdtemp(), "child.json")
    child = phalanx.get_context(method).Process(
        target=_sync_targets.segments_then_sleep, args=(report, 2))
    child.start()
    from_child = _targets.wait_for_json(report)
    print(json.dumps({
        "tracked": [s.name for s in tracked] + [sl.shm.name] + from_child["names"],
        "untracked": untracked.name,
        "tracker": _tracker.tracker_pid(),
    }), flush=True)
    os.killpg(0, signal.SIGKILL)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_segments_of_a_killed_tree_are_removed(method: str) -> None:
    result = run_python(["-c", python_code(KILLED_TREE), method])
    assert result.returncode == -signal.SIGKILL, result.stderr
    made = json.loads(result.stdout)
    try:
        assert len(made["tracked"]) == 6
        # run_python read stderr to EOF: the tracker (which holds it) is done.
        wait_until(
            lambda: not any(in_dev_shm(name) for name in made["tracked"]),
            timeout=5,
            what="segments of the killed tree removed",
        )
        # EOF on its stderr comes as it exits, a moment before it is gone.
        wait_until(lambda: not pid_exists(made["tracker"]), timeout=5, what="tracker exited")
        assert "6 shared_memory object(s) left behind" in result.stderr
        # track=False: the creator opted out, the segment stays.
        assert in_dev_shm(made["untracked"])
    finally:
        remove(made["untracked"])
        for name in made["tracked"]:
            remove(name)


# An attach-only process tree (with a tracker of its own, for a segment it
# created) exits normally or is killed: the segment it attached to survives.
ATTACH_ONLY = """
import json, os, signal, sys
from phalanx import _tracker, shared_memory

theirs = shared_memory.SharedMemory(sys.argv[1])
theirs.buf[0] = 0x5A
mine = shared_memory.SharedMemory(create=True, size=4096)
print(json.dumps({"mine": mine.name, "tracker": _tracker.tracker_pid()}), flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
theirs.close()
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_attaching_never_unlinks(segment: SharedMemory, how: str) -> None:
    result = run_python(["-c", ATTACH_ONLY, segment.name, how])
    assert result.returncode == (0 if how == "exit" else -signal.SIGKILL), result.stderr
    made = json.loads(result.stdout)
    assert not in_dev_shm(made["mine"])  # the script's tracker did its job ...
    wait_until(lambda: not pid_exists(made["tracker"]), timeout=5, what="tracker exited")
    assert in_dev_shm(segment.name)  # ... and left our segment alone
    assert segment.buf[0] == 0x5A
    assert segment.name not in result.stderr


# The tracker is SIGKILLed under a running program: the next process start
# notices (without writing to it) and starts a new one, which then cleans up
# a segment the program leaves behind.
TRACKER_KILLED = """
import json, os, signal, time
import phalanx
from phalanx import _tracker, shared_memory

def noop():
    pass

if __name__ == "__main__":
    p = phalanx.get_context("fork").Process(target=noop)
    p.start(); p.join(30)
    first = _tracker.tracker_pid()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while os.waitpid(first, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    p = phalanx.get_context("fork").Process(target=noop)
    p.start(); p.join(30)
    second = _tracker.tracker_pid()
    left = shared_memory.SharedMemory(create=True, size=4096)
    print(json.dumps({"first": first, "second": second, "name": left.name}), flush=True)
    os._exit(0)  # no unlink, no close: the tracker's to clean up
"""


def test_a_killed_tracker_is_replaced_at_the_next_start() -> None:
    result = run_python(["-c", TRACKER_KILLED])
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    try:
        assert made["second"] not in (None, made["first"])
        wait_until(
            lambda: not in_dev_shm(made["name"]), timeout=5, what="the new tracker's cleanup"
        )
        wait_until(lambda: not pid_exists(made["second"]), timeout=5, what="tracker exit")
    finally:
        remove(made["name"])


# The creator's process group gets SIGINT or SIGTERM; a child that ignores
# both keeps the tree alive meanwhile.
SIGNALLED_GROUP = """
import json, os, signal, sys, tempfile
import phalanx, _sync_targets, _targets
from phalanx import _tracker, shared_memory

if __name__ == "__main__":
    sig = int(sys.argv[1])
    shm = shared_memory.SharedMemory(create=True, size=4096)
    report = os.path.join(tempfile.mkdtemp(), "child.json")
    child = phalanx.get_context("spawn").Process(
        target=_sync_targets.segments_then_sleep, args=(report, 1, True))
    child.start()
    from_child = _targets.wait_for_json(report)
    print(json.dumps({
        "names": [shm.name] + from_child["names"],
        "tracker": _tracker.tracker_pid(),
        "child": from_child["pid"],
    }), flush=True)
    signal.signal(sig, signal.SIG_DFL)
    os.killpg(0, sig)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tracker_outlives_a_signal_to_the_creators_group(tmp_path: Path, sig: int) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as fout, open(err, "w") as ferr:
        proc = subprocess.Popen(
            [sys.executable, "-c", python_code(SIGNALLED_GROUP), str(int(sig))],
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
    made: dict[str, Any] = {}
    try:
        assert proc.wait(DEADLINE) == -sig
        made = json.loads(out.read_text())
        # The creator is gone, its child (which ignores the signal) is not:
        # the tree is still alive, so are the tracker and every segment.
        assert pid_exists(made["child"])
        assert pid_exists(made["tracker"])
        assert made["tracker"] not in session_members(proc.pid)
        assert all(in_dev_shm(name) for name in made["names"])
        os.kill(made["child"], signal.SIGKILL)
        wait_until(
            lambda: not any(in_dev_shm(name) for name in made["names"]),
            timeout=5,
            what="the tracker removing the segments",
        )
        wait_until(lambda: not pid_exists(made["tracker"]), timeout=5, what="tracker exit")
        assert "2 shared_memory object(s) left behind" in err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        for pid in session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
        for name in made.get("names", []):
            remove(name)


# A child creates a segment and exits without unlinking it, in a tree whose
# root has created no segment yet (so has no tracker yet).
CHILD_CREATES_FIRST = """
import json, os, sys, tempfile
import phalanx, _sync_targets, _targets
from phalanx import shared_memory

if __name__ == "__main__":
    report = os.path.join(tempfile.mkdtemp(), "child.json")
    p = phalanx.get_context(sys.argv[1]).Process(
        target=_sync_targets.create_segment_tracked, args=(report, 4096, b"result"))
    p.start()
    p.join(30)
    made = _targets.wait_for_json(report)
    if made["tracker"] is not None:  # give a tracker of the child's own time to act
        _targets.wait_until(lambda: not _targets.pid_exists(made["tracker"]), 10)
    try:
        shm = shared_memory.SharedMemory(made["name"])
    except FileNotFoundError:
        print(json.dumps({"attached": False}))
    else:
        print(json.dumps({"attached": True, "data": bytes(shm.buf[:6]).decode()}))
        shm.close()
        shm.unlink()
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_childs_segment_outlives_the_child(method: str) -> None:
    result = run_python(["-c", python_code(CHILD_CREATES_FIRST), method])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"attached": True, "data": "result"}
    assert "left behind" not in result.stderr
