"""Stand-in for ansible-test's pip bootstrap (https://ci-files.testing.ansible.com/ansible-test/get-pip-X.py,
unreachable from this project's machines): `pip install ARGS` with the pip wheel Python's ensurepip bundles,
which then installs the pip version ansible-test asks for from PyPI. get-pip's own options
(--no-setuptools, --no-wheel: do not install those) are not pip's, and are dropped."""

import ensurepip
import glob
import os
import runpy
import sys

whl = sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))[-1]
sys.path.insert(0, whl)
sys.argv = ["pip", "install"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
