# -*- coding: utf-8 -*-
# Copyright: numamove developers
# MIT License (see https://opensource.org/licenses/MIT)
"""Running the installed numamove command from the collection's modules.

The modules never reimplement numamove: they build its command line, run it with --json, and turn
its exit code, its one-line error and its JSON report into Ansible's result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

EXIT_PARTIAL = 3

COMMON_OPTIONS = dict(
    executable=dict(type="path"),
)

# the options of the modules that move pages (documented by the doc fragment numamove.numamove.common.move)
MOVE_OPTIONS = dict(
    from_nodes=dict(type="str", aliases=["from"]),
    threads=dict(type="str", default="auto"),
    policy=dict(type="str", choices=["push", "pull", "auto"], default="auto"),
    allow_partial=dict(type="bool", default=False),
)


def numamove_path(module):
    """The numamove command: the executable option, else numamove on PATH (or /usr/local/bin)."""
    if module.params.get("executable"):
        return module.params["executable"]
    return module.get_bin_path("numamove", required=True, opt_dirs=["/usr/local/bin", "/usr/local/sbin"])


def run_numamove(module, args):
    """Run numamove with args and --json.

    Returns a dict: rc, doc (the JSON report, or None), msg (numamove's one-line error, or ''),
    warnings (its warning lines) and cmd.
    """
    cmd = [numamove_path(module)] + [str(a) for a in args] + ["--json"]
    rc, out, err = module.run_command(cmd)
    doc = None
    if out and out.strip():
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
    msg = ""
    warnings = []
    for line in (err or "").splitlines():
        if line.startswith("numamove: error: "):
            msg = line[len("numamove: error: "):]
        elif line.startswith("numamove: warning: "):
            warnings.append(line[len("numamove: warning: "):])
    if rc != 0 and not msg:
        lines = [x for x in (err or "").splitlines() if x.strip()]
        msg = lines[-1] if lines else "numamove exited with status %d" % rc
    return dict(rc=rc, doc=doc, msg=msg, warnings=warnings, cmd=cmd)


def finish(module, res, changed, allow_partial, extra=None):
    """exit_json or fail_json for a numamove run: 0 is success, 3 (partly done) fails unless allow_partial,
    anything else fails with numamove's own message and exit code."""
    for w in res["warnings"]:
        module.warn(w)
    result = dict(changed=changed, rc=res["rc"], cmd=res["cmd"], numamove=res["doc"])
    if extra:
        result.update(extra)
    if res["rc"] == 0:
        module.exit_json(**result)
    if res["rc"] == EXIT_PARTIAL and res["doc"] is not None:
        if allow_partial:
            module.warn("partly done (numamove exit 3): %s" % (res["msg"] or "some pages could not be moved"))
            module.exit_json(**result)
        module.fail_json(msg="partly done (numamove exit 3; set allow_partial to accept): %s"
                         % (res["msg"] or "some pages could not be moved"), **result)
    module.fail_json(msg=res["msg"], **result)


def pages(doc, key, section="processes"):
    """Sum of pages and of bytes under doc[section][*][key] (moved, requested)."""
    n = b = 0
    for rep in (doc or {}).get(section) or []:
        n += rep.get(key, {}).get("pages", 0)
        b += rep.get(key, {}).get("bytes", 0)
    return n, b
