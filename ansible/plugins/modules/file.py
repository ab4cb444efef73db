#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: numamove developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: file
short_description: Move shared-memory files (tmpfs, hugetlbfs) to a NUMA node
version_added: "0.1.0"
description:
  - Runs C(numamove file) on the managed host. In place (the default), the resident pages of each file
    move to the node while every process that maps it keeps running; the file's shared policy then
    prefers the node.
  - With O(copy=true), numamove copies the file on pinned threads into a new tmpfs file bound to the
    node and exchanges it for the original (the file must not be open), or writes the copy to O(output).
  - The module is idempotent, C(changed) is true only when pages moved or a copy was made; a file
    already on the node is left alone, in place and with O(copy=true) alike. In check mode numamove runs with C(--dry-run).
options:
  path:
    description: The files (on tmpfs such as C(/dev/shm), or hugetlbfs; with O(output), any file).
    type: list
    elements: path
    required: true
  to:
    description: Destination node.
    type: str
    required: true
  copy:
    description: Copy into a new file on the node instead of moving pages in place.
    type: bool
    default: false
  output:
    description: With O(copy=true), write the copy here (on tmpfs) and keep the source.
    type: path
extends_documentation_fragment:
  - numamove.numamove.common
  - numamove.numamove.common.move
author:
  - numamove developers (@numamove)
"""

EXAMPLES = r"""
- name: Move a shared-memory feature store to node 1, in place
  numamove.numamove.file:
    path: /dev/shm/feature-store
    to: "1"
  become: true

- name: Stage a data set from disk into node-local shared memory
  numamove.numamove.file:
    path: /data/embeddings.bin
    copy: true
    output: /dev/shm/embeddings.bin
    to: "1"
"""

RETURN = r"""
moved_pages:
  description: Pages moved in place (in check mode, pages that would move); 0 with O(copy=true).
  returned: always
  type: int
copied_bytes:
  description: Bytes copied with O(copy=true) (in check mode, bytes that would be copied).
  returned: always
  type: int
rc:
  description: numamove's exit code.
  returned: always
  type: int
cmd:
  description: The numamove command line that ran.
  returned: always
  type: list
  elements: str
numamove:
  description: numamove's full JSON report (C(numamove file --json)), documented by its JSON schema.
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
        path=dict(type="list", elements="path", required=True),
        to=dict(type="str", required=True),
        copy=dict(type="bool", default=False),
        output=dict(type="path"),
    )
    spec.update(COMMON_OPTIONS)
    spec.update(MOVE_OPTIONS)
    module = AnsibleModule(argument_spec=spec, required_by={"output": "copy"}, supports_check_mode=True)
    p = module.params
    base = ["file"] + p["path"] + ["--to", p["to"], "-q", "--threads", p["threads"], "--policy", p["policy"]]
    if p["from_nodes"] is not None:
        base += ["--from", p["from_nodes"]]
    if p["copy"] and not p["output"]:
        # a file whose every page is on the node already needs no copy: ask numamove where its pages are
        probe = run_numamove(module, base + ["--dry-run"])
        if probe["rc"] == 0 and probe["doc"] is not None and pages(probe["doc"], "requested", "files")[0] == 0:
            finish(module, probe, False, p["allow_partial"], dict(moved_pages=0, copied_bytes=0))
    args = list(base)
    if p["copy"]:
        args.append("--copy")
        if p["output"]:
            args += ["--output", p["output"]]
    if module.check_mode:
        args.append("--dry-run")
    res = run_numamove(module, args)
    doc = res["doc"] or {}
    if p["copy"]:
        copied = sum(c.get("bytes", 0) for c in doc.get("copies") or [])
        finish(module, res, copied > 0, p["allow_partial"], dict(moved_pages=0, copied_bytes=copied))
    n, _b = pages(doc, "requested" if module.check_mode else "moved", "files")
    finish(module, res, n > 0, p["allow_partial"], dict(moved_pages=n, copied_bytes=0))


if __name__ == "__main__":
    main()
