"""What ``import phalanx`` and a spawned child load (issue 16: no slower to import
than ``multiprocessing``).  Each check runs in a fresh interpreter of its own.

The time itself is measured by ``benchmarks/bench_startup.py``; these tests hold
the cause: the parts of the API a program has not used are not imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from _targets import DEADLINE

# Never loaded by ``import phalanx``: the stdlib's ``import multiprocessing``
# loads none of the stdlib ones either, except socket/selectors (which phalanx
# only needs once a connection or queue exists).
NOT_ON_IMPORT = (
    "typing",
    "ctypes",
    "socket",
    "selectors",
    "tempfile",
    "shutil",
    "hashlib",
    "secrets",
    "traceback",
    "weakref",
    "contextlib",
    "logging",
    "phalanx._platform._libc",
    "phalanx._semlock",
    "phalanx._connection",
    "phalanx.synchronize",
    "phalanx.queues",
    "phalanx.sharedctypes",
    "phalanx.pool",
    "phalanx.managers",
    "phalanx._speedups",
)

# Never loaded in a spawned child whose target needs none of them.  The child
# runs the parent's main script itself: runpy (which the stdlib's spawn uses)
# brings pkgutil and, on 3.11, typing.
NOT_IN_A_TRIVIAL_CHILD = (
    "runpy",
    "pkgutil",
    "typing",
    "ctypes",
    "socket",
    "tempfile",
    "shutil",
    "hashlib",
    "phalanx._platform._libc",
    "phalanx._semlock",
    "phalanx._connection",
    "phalanx.synchronize",
    "phalanx.queues",
    "phalanx.pool",
)


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_phalanx_loads_only_what_starting_a_process_needs() -> None:
    # Judged against a bare interpreter of the same environment (a .pth file may import some).
    bare = set(json.loads(_run("import sys, json; print(json.dumps(sorted(sys.modules)))")))
    loaded = json.loads(_run("import sys, json, phalanx; print(json.dumps(sorted(sys.modules)))"))
    assert [name for name in NOT_ON_IMPORT if name in loaded and name not in bare] == []


def test_managers_load_xmlrpc_only_for_the_xmlrpclib_serializer() -> None:
    """xmlrpc.client brings http.client, email and ssl (~25 ms in every manager server)."""
    heavy = ("xmlrpc.client", "http.client", "ssl", "email.parser")
    bare = set(json.loads(_run("import sys, json; print(json.dumps(sorted(sys.modules)))")))
    loaded = json.loads(
        _run("import sys, json, phalanx.managers; print(json.dumps(sorted(sys.modules)))")
    )
    assert [name for name in heavy if name in loaded and name not in bare] == []


def test_the_lazy_names_resolve_on_first_use() -> None:
    out = _run(
        """
        import phalanx
        import phalanx.reduction as reduction
        assert phalanx.reducer is reduction
        print(phalanx.reduction.ForkingPickler.__name__, phalanx.util.SUBDEBUG,
              phalanx.synchronize.Lock.__name__, phalanx.queues.Queue.__name__,
              phalanx.sharedctypes.RawValue.__name__)
        namespace = {}
        exec("from phalanx import *", namespace)
        missing = [name for name in phalanx.__all__ if name not in namespace]
        print(missing, namespace["reducer"] is reduction)
        try:
            phalanx.no_such_name
        except AttributeError as e:
            print(e)
        """
    )
    assert out.splitlines() == [
        "ForkingPickler 5 Lock Queue RawValue",
        "[] True",
        "module 'phalanx' has no attribute 'no_such_name'",
    ]


def test_the_api_still_works_from_a_bare_import() -> None:
    """Every part imported on first use by the context's methods."""
    out = _run(
        """
        import phalanx
        lock = phalanx.Lock()
        with lock:
            pass
        q = phalanx.SimpleQueue()
        q.put(1)
        a, b = phalanx.Pipe()
        a.send(2)
        v = phalanx.Value("i", 3)
        print(q.get(), b.recv(), v.value, phalanx.Event().is_set())
        """
    )
    assert out.split() == ["1", "2", "3", "False"]


def _child_modules(method: str, tmp_path: Path) -> list[str]:
    """The modules a child started by ``method`` with a trivial target has loaded."""
    report = tmp_path / "modules.json"
    script = tmp_path / "main.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            import phalanx

            def report(path):
                with open(path, "w") as f:
                    json.dump(sorted(sys.modules), f)

            if __name__ == "__main__":
                p = phalanx.get_context({method!r}).Process(target=report, args=({str(report)!r},))
                p.start()
                p.join({DEADLINE})
                print(p.exitcode)
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=DEADLINE * 2
    )
    assert out.stdout.split() == ["0"], out.stderr
    return list(json.loads(report.read_text(encoding="utf-8")))


def test_a_trivial_spawned_child_loads_only_what_it_needs(tmp_path: Path) -> None:
    loaded = _child_modules("spawn", tmp_path)
    assert [name for name in NOT_IN_A_TRIVIAL_CHILD if name in loaded] == []


def test_the_fork_server_preloads_what_children_most_often_receive(tmp_path: Path) -> None:
    """A forkserver child is a fork of the server: what the server imported once
    (queues, locks, connections) no child imports again after its fork."""
    loaded = _child_modules("forkserver", tmp_path)
    assert {"phalanx.queues", "phalanx.synchronize", "phalanx._connection"} <= set(loaded)


# Never loaded by a spawned pool worker: what it needs to run tasks is its socket,
# its progress block (a shared-memory arena inherited as an fd) and the pickles.
NOT_IN_A_POOL_WORKER = (
    "hashlib",
    "hmac",
    "secrets",
    "tempfile",
    "shutil",
    "ctypes",
    "phalanx._resource_sharer",
    "phalanx._wire.auth",
    "phalanx.pool",
    "phalanx.queues",
    "phalanx.synchronize",
)


def test_a_spawned_pool_worker_loads_only_what_running_tasks_needs(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            import phalanx

            def modules(_):
                return sorted(sys.modules)

            if __name__ == "__main__":
                with phalanx.get_context("spawn").Pool(1) as pool:
                    print(json.dumps(pool.apply(modules, (0,), timeout={DEADLINE})))
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=DEADLINE * 2
    )
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert "phalanx._pool.worker" in loaded
    assert [name for name in NOT_IN_A_POOL_WORKER if name in loaded] == []
