"""The documentation's examples (``docs/examples/*.py``) run, under every start method.

Each example is a program a reader can run as it is (``python docs/examples/pool.py``);
its ``.out`` file beside it is what it prints, with ``...`` standing for what
changes from run to run (pids), as in a doctest.  The examples use the default
start method, as readers' programs do; here a ``sitecustomize`` module sets it,
in every interpreter the example starts, from ``PHALANX_DOCS_START_METHOD``.
"""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

from _targets import START_METHODS, run_python

pytestmark = pytest.mark.docs

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
PROGRAMS = sorted(p.name for p in EXAMPLES.glob("*.py"))

SITECUSTOMIZE = """\
import os

method = os.environ.get("PHALANX_DOCS_START_METHOD")
if method:
    import phalanx

    phalanx.set_start_method(method, force=True)
"""


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("docs-site")
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return directory


def test_every_example_has_its_expected_output() -> None:
    assert PROGRAMS, EXAMPLES
    assert [p for p in PROGRAMS if not (EXAMPLES / p).with_suffix(".out").exists()] == []
    assert sorted(p.stem for p in EXAMPLES.glob("*.out")) == sorted(p[:-3] for p in PROGRAMS)


def _matches(want: str, got: str) -> bool:
    return doctest.OutputChecker().check_output(want, got, doctest.ELLIPSIS)


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("program", PROGRAMS)
def test_example(program: str, method: str, site_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PHALANX_DOCS_START_METHOD"] = method
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site_dir), env.get("PYTHONPATH")]))
    result = run_python([str(EXAMPLES / program)], env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, f"{program} under {method}:\n{result.stderr}"
    want = (EXAMPLES / program).with_suffix(".out").read_text(encoding="utf-8")
    assert _matches(want, result.stdout), (
        f"{program} under {method} printed:\n{result.stdout}\nexpected:\n{want}\n{result.stderr}"
    )


def test_the_method_is_the_one_asked_for(site_dir: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import phalanx\nprint(phalanx.get_start_method())\n", encoding="utf-8")
    for method in START_METHODS:
        env = {**os.environ, "PHALANX_DOCS_START_METHOD": method, "PYTHONPATH": str(site_dir)}
        assert run_python([str(probe)], env=env).stdout.strip() == method
