"""The optional C extension; everything else is in pyproject.toml.

``optional=True``: where it cannot be compiled (no compiler, ``CC=false``)
the install goes on without it and phalanx runs its pure-Python path.  Not
built for a free-threaded interpreter: its code relies on the GIL.
"""

import sysconfig

from setuptools import Extension, setup

free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

setup(
    ext_modules=[]
    if free_threaded
    else [Extension("phalanx._speedups", ["src/phalanx/_speedups.c"], optional=True)]
)
