"""The Ansible collection in ansible/ (numamove.numamove): sanity, installation, and its modules run by
ansible-playbook, here (one node: nothing moves) and in the two-node guest (a workload moves once).

ansible-core comes from PyPI through the test extra. `ansible-test sanity` makes a virtual environment
per test and bootstraps pip into it with a script it downloads from ci-files.testing.ansible.com, which
this project's machines cannot reach: tests/ansible_get_pip.py stands in for it (pip install with the
pip wheel Python bundles), and everything else ansible-test installs comes from PyPI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from workload_helper import Workload

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytest.importorskip("ansible", reason="ansible-core comes with the test extra (make build)")


def _env(collections: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(collections / "tmp"),
            "ANSIBLE_HOME": str(collections / "home"), "ANSIBLE_REMOTE_TMP": str(collections / "remote-tmp")}


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection where Ansible looks for it: COLLECTIONS/ansible_collections/numamove/numamove."""
    top = tmp_path_factory.mktemp("collections")
    shutil.copytree(ROOT / "ansible", top / "ansible_collections" / "numamove" / "numamove",
                    ignore=shutil.ignore_patterns("output", "__pycache__"))
    return top


def playbook(collections: Path, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run tasks on localhost (-c local); each task's registered result (written out by a last task)."""
    out = collections / "results.json"
    tasks = [{**t, "register": f"r{i}"} for i, t in enumerate(tasks)]
    names = ", ".join(f"r{i}" for i in range(len(tasks)))
    tasks.append({"ansible.builtin.copy": {"content": "{{ [" + names + "] | to_json }}", "dest": str(out)},
                  "check_mode": False})
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks,
             "vars": {"ansible_python_interpreter": sys.executable}}]
    path = collections / "play.yml"
    path.write_text(json.dumps(play))
    p = subprocess.run([str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,", str(path)],
                       capture_output=True, text=True, env=_env(collections), timeout=900)
    assert p.returncode == 0 and out.exists(), f"rc={p.returncode}: {p.stdout[-3000:]} {p.stderr[-2000:]}"
    results: list[dict[str, Any]] = json.loads(out.read_text())
    out.unlink()
    return results


def test_collection_passes_ansible_test_sanity(collections: Path) -> None:
    """`ansible-test sanity` on the collection: validate-modules (documentation against argument specs),
    ansible-doc, pylint, pep8, yamllint, import and the rest, all green."""
    import ansible_test

    wanted = re.search(r"pip='([0-9.]+)'", (Path(ansible_test.__file__).parent / "_internal" /
                                            "python_requirements.py").read_text())
    assert wanted, "ansible-test's pip version not found"
    cache = Path(os.path.expanduser(f"~/.ansible/test/cache/get_pip_{wanted.group(1).replace('.', '_')}.py"))
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "tests" / "ansible_get_pip.py", cache)
    where = collections / "ansible_collections" / "numamove" / "numamove"
    p = subprocess.run([str(BIN / "ansible-test"), "sanity", "--python", f"{sys.version_info[0]}.{sys.version_info[1]}",
                        "--color", "no"], cwd=where, capture_output=True, text=True, env=_env(collections),
                       timeout=900)
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert p.returncode == 0, "\n".join(errors) or p.stderr[-3000:]


def test_collection_builds_and_installs(tmp_path: Path) -> None:
    """`ansible-galaxy collection build` and `install` make it usable by name, and ansible-doc renders every
    module from the installed copy."""
    env = _env(tmp_path)
    p = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT / "ansible"), "--output-path",
                        str(tmp_path)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    tarball = next(tmp_path.glob("numamove-numamove-*.tar.gz"))
    p = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    for module in ("proc", "file", "facts"):
        p = subprocess.run([str(BIN / "ansible-doc"), f"numamove.numamove.{module}"], capture_output=True, text=True,
                           env=env)
        assert p.returncode == 0 and "EXAMPLES" in p.stdout and "RETURN VALUES" in p.stdout, p.stderr


def test_modules_on_one_node(collections: Path) -> None:
    """On this one-node host: facts gathered; a process already on node 0 is `ok`, not changed, in check
    mode too; a shared-memory file likewise; a bad node fails with numamove's own line and exit code 2."""
    shm = f"/dev/shm/numamove-ansible-{os.getpid()}"
    with open(shm, "wb") as f:
        f.write(os.urandom(1 << 20))
    try:
        with Workload("--size", "4M") as w:
            tasks = [{"numamove.numamove.facts": {}},
                     {"numamove.numamove.proc": {"pids": [w.pid], "to": "0"}},
                     {"numamove.numamove.proc": {"pids": [w.pid], "to": "0"}, "check_mode": True},
                     {"numamove.numamove.file": {"path": shm, "to": "0"}},
                     {"numamove.numamove.file": {"path": shm, "to": "0", "copy": True}},
                     {"numamove.numamove.proc": {"pids": [w.pid], "to": "99"}, "ignore_errors": True},
                     {"numamove.numamove.proc": {"to": "0"}, "ignore_errors": True}]
            facts, moved, checked, infile, copied, bad, nothing = playbook(collections, tasks)
    finally:
        os.unlink(shm)
    nodes = facts["ansible_facts"]["numamove"]["nodes"]["nodes"]
    assert [n["node"] for n in nodes] == [0] and "in_use" in facts["ansible_facts"]["numamove"]["calibration"]
    assert not moved.get("failed") and moved["changed"] is False and moved["moved_pages"] == 0
    assert moved["numamove"]["targets"][0]["pid"] == w.pid and moved["numamove"]["targets"][0]["outcome"] == "moved"
    assert checked["changed"] is False and checked["numamove"]["dry_run"] is True
    assert infile["changed"] is False and not infile.get("failed")
    assert copied["changed"] is False and copied["copied_bytes"] == 0
    assert bad["failed"] and bad["rc"] == 2 and bad["msg"].startswith("node 99 does not exist")
    assert nothing["failed"] and "one of the following is required" in nothing["msg"]


def run_module(collections: Path, module: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one of the collection's modules as Ansible's local connection ends up running it: the
    interpreter, the module and a file of its arguments; its one JSON result. No ansible-playbook around it:
    under TCG each playbook costs ~20-30 s of start-up, and the host tests run the modules through playbooks."""
    argfile = collections / f"args-{module}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    p = subprocess.run([sys.executable, "-m", f"ansible_collections.numamove.numamove.plugins.modules.{module}",
                        str(argfile)], capture_output=True, text=True, timeout=600,
                       env={**_env(collections), "PYTHONPATH": str(collections)})
    argfile.unlink()
    result: dict[str, Any] = json.loads(p.stdout)
    return result


@pytest.mark.numa(nodes=2, guest="two")
def test_proc_module_moves_then_finds_it_there(collections: Path) -> None:
    """In the two-node guest: the first run moves a workload (changed), the second finds it there: its data
    is not moved again, and what the second run does move can only be pages the first skipped because another
    process mapped them too (library pages the module's own process had mapped: the kernel moves them once
    that process is gone, and then `changed` is true, honestly). The `ok` path itself (nothing moved, changed
    false, in check mode too) is tested on the host, through ansible-playbook."""
    from test_numa_proc import where_range

    with Workload("--size", "16M", "--node", "0") as w:
        args = {"pids": [w.pid], "to": "1"}
        first = run_module(collections, "proc", args)
        second = run_module(collections, "proc", args)
        assert first["changed"] is True and first["moved_bytes"] >= 16 << 20, first
        shared = first["numamove"]["processes"][0]["skipped"].get("shared with other processes (use --all)", {})
        assert not second.get("failed") and second["changed"] is (second["moved_pages"] > 0), second
        assert second["moved_pages"] <= shared.get("pages", 0), (second["moved_pages"], shared)
        assert where_range(w.pid, *w.anon) == {1} and w.check()[0]


def test_rebalance_playbook_runs_the_role(collections: Path) -> None:
    """The collection's playbook (by its name) runs the role on a host: facts, no calibration wanted, the
    move of a named process, the report line; nothing moves on one node."""
    with Workload("--size", "4M") as w:
        p = subprocess.run([str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,",
                            "numamove.numamove.rebalance", "-e", "target_hosts=localhost", "-e", "ansible_become=false",
                            "-e", f"ansible_python_interpreter={sys.executable}", "-e", "numamove_to=0",
                            "-e", f'{{"numamove_pids": [{w.pid}]}}', "-e", "numamove_calibrate=false"],
                           capture_output=True, text=True, env=_env(collections), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "Bytes moved to node 0 (1 process(es))" in p.stdout, p.stdout
    assert "ok=3 " in p.stdout and "changed=0 " in p.stdout and "failed=0 " in p.stdout
