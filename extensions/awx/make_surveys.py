# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWX survey specs for the apex.ops playbooks, generated from the roles' meta/argument_specs.yml.

AWX does not read role argument specs, so a job template's survey would be typed by hand and
drift. This writes one survey per playbook to extensions/awx/surveys/<playbook>.json:

    python3 extensions/awx/make_surveys.py           # regenerate
    python3 extensions/awx/make_surveys.py --check   # exit 1 when a committed file differs

What a survey asks: the role's own options (what to do). Not asked: options whose default is a
template of the shared apex_* variables (where: connections, namespace, report directory; the
inventory and credentials decide those, docs/variables.md), and list/dict options (an AWX
answer is a string, which the role would not read as a list). apex_allow_interrupted is asked.
Options the role marks no_log, and names that hold secrets, become password questions.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SURVEY_DIR = os.path.join(ROOT, "extensions", "awx", "surveys")
AWX_TYPES = ("text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect")
SECRET_NAME = re.compile(r"password|passphrase|secret_key|token|access_key|api_key|key_pem")
MARKUP = re.compile(r"\b[CVOEIMRBLU]\(([^)]*)\)")
SHARED_ASKED = ("apex_allow_interrupted",)
TEXT_MAX = 1024
PEM_MAX = 65536  # a certificate chain or key pasted into the survey


def playbook_roles(root=ROOT):
    """{playbook name: role} for playbooks/<name>.yml that apply one apex.ops role."""
    found = {}
    folder = os.path.join(root, "playbooks")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".yml") or name.startswith("_"):
            continue
        with open(os.path.join(folder, name)) as handle:
            plays = yaml.safe_load(handle) or []
        roles = [entry["role"] if isinstance(entry, dict) else entry
                 for play in plays for entry in play.get("roles", [])]
        if len(roles) == 1:
            found[name[:-4]] = roles[0].rsplit(".", 1)[-1]
    return found


def role_spec(role, root=ROOT):
    with open(os.path.join(root, "roles", role, "meta", "argument_specs.yml")) as handle:
        return yaml.safe_load(handle)["argument_specs"]["main"]


def plain(text):
    """Argument-spec markup (C(x), O(x), V(x)...) as plain text, lists joined."""
    if isinstance(text, list):
        text = " ".join(text)
    return " ".join(MARKUP.sub(r"\1", str(text or "")).split())


def is_secret(name, option):
    return bool(option.get("no_log")) or bool(SECRET_NAME.search(name))


def asked(name, option):
    """Whether a survey asks for this option (see the module docstring)."""
    if name.startswith("apex_"):
        return name in SHARED_ASKED
    if option.get("type") in ("list", "dict"):
        return False
    default = option.get("default")
    return not (isinstance(default, str) and "{{" in default)


def _title(name, role):
    stem = name[len(role) + 1:] if name.startswith(role + "_") else name
    return stem.replace("_", " ").capitalize()


def question(name, option, role):
    """One AWX survey question for a role option."""
    kind = option.get("type", "str")
    default = option.get("default")
    item = {
        "question_name": _title(name, role),
        "question_description": plain(option.get("description")),
        "variable": name,
        "required": bool(option.get("required")),
    }
    longest = PEM_MAX if name.endswith("_pem") else TEXT_MAX
    if is_secret(name, option):
        item.update(type="password", default="", min=0, max=longest)
    elif kind == "bool":
        item.update(type="multiplechoice", choices=["true", "false"],
                    default="" if default is None else ("true" if default else "false"))
    elif option.get("choices"):
        item.update(type="multiplechoice", choices=[str(c) for c in option["choices"]],
                    default="" if default is None else str(default))
    elif kind == "int":
        item.update(type="integer", default="" if default is None else int(default))
    elif kind == "float":
        item.update(type="float", default="" if default is None else float(default))
    else:  # str, raw, path
        item.update(type="textarea" if name.endswith("_pem") else "text",
                    default="" if default is None else str(default), min=0, max=longest)
    return item


def survey(playbook, role, spec):
    """The AWX survey spec (name, description, spec) of one playbook."""
    questions = [question(name, option, role) for name, option in spec.get("options", {}).items()
                 if asked(name, option)]
    return {
        "name": "apex.ops.%s" % playbook,
        "description": plain(spec.get("short_description")),
        "spec": questions,
    }


def render(data):
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(root=ROOT):
    """{file name: content} of every survey."""
    return {"%s.json" % playbook: render(survey(playbook, role, role_spec(role, root)))
            for playbook, role in sorted(playbook_roles(root).items())}


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    parser.add_argument("--out", default=SURVEY_DIR)
    args = parser.parse_args(argv)
    wanted = generate()
    existing = set(n for n in os.listdir(args.out) if n.endswith(".json")) if os.path.isdir(args.out) else set()
    drift = sorted(n for n in wanted if _read(os.path.join(args.out, n)) != wanted[n])
    stale = sorted(existing - set(wanted))
    if args.check:
        for name in drift + stale:
            print("out of date: %s" % os.path.join(args.out, name))
        return 1 if drift or stale else 0
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    for name in drift:
        with open(os.path.join(args.out, name), "w") as handle:
            handle.write(wanted[name])
    for name in stale:
        os.remove(os.path.join(args.out, name))
    print("%d surveys in %s (%d written, %d removed)" % (len(wanted), args.out, len(drift), len(stale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
