#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: numamove developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: facts
short_description: Gather a host's NUMA topology and numamove calibration as facts
version_added: "0.1.0"
description:
  - Runs C(numamove nodes --json) and C(numamove calibrate --show --json) on the managed host and
    returns them as C(ansible_facts.numamove.nodes) (nodes, CPUs, memory, distances) and
    C(ansible_facts.numamove.calibration) (the calibration that numamove's C(auto) policy and threads
    follow there, and why), plus C(ansible_facts.numamove.version).
  - Changes nothing; runs in check mode too.
attributes:
  check_mode:
    description: Gathering changes nothing, so check mode gathers the same facts.
    support: full
  diff_mode:
    description: No diff is produced.
    support: none
  facts:
    description: Returns C(ansible_facts.numamove).
    support: full
extends_documentation_fragment:
  - numamove.numamove.common
author:
  - numamove developers (@numamove)
"""

EXAMPLES = r"""
- name: Gather NUMA facts
  numamove.numamove.facts:

- name: Calibrate the hosts that have no calibration yet
  ansible.builtin.command: numamove calibrate -q
  when: not ansible_facts.numamove.calibration.in_use
  become: true

- name: Hosts with a CPU-less (CXL) memory node
  ansible.builtin.debug:
    msg: "{{ ansible_facts.numamove.nodes.nodes | selectattr('has_cpu', 'equalto', false) | list }}"
"""

RETURN = r"""
ansible_facts:
  description: The host's numamove facts.
  returned: always
  type: complex
  contains:
    numamove:
      description: nodes (C(numamove nodes --json)), calibration (C(numamove calibrate --show --json)), version.
      type: dict
      returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.numamove.numamove.plugins.module_utils.numamove_cli import (
    COMMON_OPTIONS,
    numamove_path,
    run_numamove,
)


def main():
    module = AnsibleModule(argument_spec=dict(COMMON_OPTIONS), supports_check_mode=True)
    facts = {}
    for key, args in (("nodes", ["nodes"]), ("calibration", ["calibrate", "--show"])):
        res = run_numamove(module, args)
        if res["rc"] != 0 or res["doc"] is None:
            module.fail_json(msg="numamove %s: %s" % (" ".join(args), res["msg"]), rc=res["rc"], cmd=res["cmd"])
        facts[key] = res["doc"]
    rc, out, err = module.run_command([numamove_path(module), "--version"])
    facts["version"] = out.strip().split()[-1] if rc == 0 and out.strip() else None
    module.exit_json(changed=False, ansible_facts=dict(numamove=facts))


if __name__ == "__main__":
    main()
