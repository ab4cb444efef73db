# -*- coding: utf-8 -*-
# Copyright: numamove developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options every module has: where numamove is."""

    DOCUMENTATION = r"""
options:
  executable:
    description: Path of the numamove command (default C(numamove) on PATH, or in C(/usr/local/bin)).
    type: path
"""

    # Options of the modules that move pages (proc, file).
    MOVE = r"""
options:
  from_nodes:
    description: Only move pages now on these nodes (for example C(0,2-3)).
    type: str
    aliases: [from]
  threads:
    description: Thread limit (1 to 32) or C(auto) (the host's calibration, else 4).
    type: str
    default: auto
  policy:
    description: Whose CPUs do the work, the source node's (push) or the destination's (pull).
    type: str
    choices: [push, pull, auto]
    default: auto
  allow_partial:
    description: Succeed when numamove moved only part of the pages (exit code 3), with a warning.
    type: bool
    default: false
attributes:
  check_mode:
    description: Runs numamove with C(--dry-run) and reports what would change.
    support: full
  diff_mode:
    description: No diff is produced.
    support: none
"""
