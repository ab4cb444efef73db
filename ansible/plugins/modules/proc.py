#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: numamove developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: proc
short_description: Move the memory of processes, cgroups or systemd units to a NUMA node
version_added: "0.1.0"
description:
  - Runs C(numamove proc) on the managed host, which moves the pages of running processes to a NUMA
    node with C(move_pages) on threads pinned to the source or destination node's CPUs.
  - Targets are PIDs, a name regex, a cgroup v2 group or a systemd unit (every process of the group).
  - The module is idempotent, C(changed) is true only when pages moved (or the group's C(cpuset.mems) was handed
    over); a second run finds the pages on the node already and reports C(changed=false). One exception (the
    kernel's rule) is a page another process also maps, a shared library's or a file's. Without O(all) it is
    skipped, and a later run moves it, and reports C(changed=true), once that process has gone or unmapped it.
  - In check mode numamove runs with C(--dry-run) and reports what would move.
  - A partial move (numamove exit code 3, some pages or processes could not be moved) fails the task
    unless O(allow_partial=true).
  - Needs numamove installed on the managed host (C(pip install numamove), or the project's C(make build)).
options:
  pids:
    description: Process IDs to move.
    type: list
    elements: int
  name:
    description: Also every process whose name or command line matches this regular expression.
    type: str
  cgroup:
    description:
      - A cgroup v2 group (under the cgroup2 mount, or relative to it as C(/proc/PID/cgroup) shows it).
      - Every process of the group and its subgroups is moved.
    type: str
  unit:
    description: A systemd unit (service, scope, slice) whose group's processes are moved.
    type: str
  to:
    description: Destination node, or C(cpus) for each process's own node (not with O(cgroup) or O(unit)).
    type: str
    required: true
  rate:
    description: Bound the average migration rate of the run, in bytes per second with binary units (C(200M)).
    type: str
  max_pause:
    description: Bound each C(move_pages) call to about this many milliseconds.
    type: float
  all:
    description: Also move pages other processes map (C(MPOL_MF_MOVE_ALL); needs root or CAP_SYS_NICE).
    type: bool
    default: false
  set_mems:
    description:
      - With O(cgroup) or O(unit), set the group's C(cpuset.mems) to the destination after the move
        (widened first when it excludes it), so the kernel finds nothing left to move.
    type: bool
    default: false
notes:
  - Run with C(become=true) to move other users' processes.
  - C(numamove proc --help) on the host documents every option.
extends_documentation_fragment:
  - numamove.numamove.common
  - numamove.numamove.common.move
author:
  - numamove developers (@numamove)
"""

EXAMPLES = r"""
- name: Move postgres's memory to node 1
  numamove.numamove.proc:
    name: postgres
    to: "1"
  become: true

- name: Move a systemd service and hand its cpuset over, bounding each call to 20 ms
  numamove.numamove.proc:
    unit: postgresql.service
    to: "1"
    set_mems: true
    max_pause: 20
  become: true

- name: Move a container's cgroup in the background at 200 MiB/s, accepting a partial move
  numamove.numamove.proc:
    cgroup: /system.slice/docker-0123abcd.scope
    to: "1"
    rate: 200M
    allow_partial: true
  register: moved
  become: true

- name: What would move (check mode runs numamove --dry-run)
  numamove.numamove.proc:
    pids: [1234, 5678]
    to: "0"
  check_mode: true
"""

RETURN = r"""
moved_pages:
  description: Pages moved (in check mode, pages that would move).
  returned: always
  type: int
  sample: 65536
moved_bytes:
  description: Bytes moved (in check mode, bytes that would move).
  returned: always
  type: int
  sample: 268435456
rc:
  description: numamove's exit code (0 moved, 3 partly, 1 nothing could be done, 2 usage, 4 busy).
  returned: always
  type: int
  sample: 0
cmd:
  description: The numamove command line that ran.
  returned: always
  type: list
  elements: str
numamove:
  description:
    - numamove's full JSON report (C(numamove proc --json)), documented by the JSON schema in
      numamove's docs/schemas; C(processes) has each process's pages per node before and after,
      C(targets) each target's outcome, C(cgroup) the group and its cpuset hand-over.
  returned: when numamove printed a report
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.numamove.numamove.plugins.module_utils.numamove_cli import (
    COMMON_OPTIONS,
    MOVE_OPTIONS,
    finish,
    pages,
    run_numamove,
)


def main():
    spec = dict(
        pids=dict(type="list", elements="int"),
        name=dict(type="str"),
        cgroup=dict(type="str"),
        unit=dict(type="str"),
        to=dict(type="str", required=True),
        rate=dict(type="str"),
        max_pause=dict(type="float"),
        all=dict(type="bool", default=False),
        set_mems=dict(type="bool", default=False),
    )
    spec.update(COMMON_OPTIONS)
    spec.update(MOVE_OPTIONS)
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=[("cgroup", "unit")],
        required_one_of=[("pids", "name", "cgroup", "unit")],
        supports_check_mode=True,
    )
    p = module.params
    if p["set_mems"] and not (p["cgroup"] or p["unit"]):
        module.fail_json(msg="set_mems hands a group over to the node: give cgroup or unit")
    args = ["proc"] + [str(x) for x in (p["pids"] or [])] + ["--to", p["to"], "-q"]
    for option, key in (("--name", "name"), ("--cgroup", "cgroup"), ("--unit", "unit"), ("--from", "from_nodes"),
                        ("--threads", "threads"), ("--policy", "policy"), ("--rate", "rate"),
                        ("--max-pause", "max_pause")):
        if p[key] is not None:
            args += [option, str(p[key])]
    if p["all"]:
        args.append("--all")
    if p["set_mems"]:
        args.append("--set-mems")
    if module.check_mode:
        args.append("--dry-run")
    res = run_numamove(module, args)
    doc = res["doc"] or {}
    n, b = pages(doc, "requested" if module.check_mode else "moved")
    cpuset = (doc.get("cgroup") or {}).get("cpuset") or {}
    changed = n > 0 or bool(cpuset.get("mems_after"))
    finish(module, res, changed, p["allow_partial"], dict(moved_pages=n, moved_bytes=b))


if __name__ == "__main__":
    main()
