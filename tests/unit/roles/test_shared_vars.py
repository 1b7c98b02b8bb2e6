"""The shared ``apex_*`` inventory variables: every role declares in ``meta/argument_specs.yml`` each one it
reads (ansible-lint, AWX surveys and the pre-flight read that file), the declarations agree across roles,
and docs/variables.md describes each of them."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
NAME = re.compile(r"\bapex_[a-z0-9_]*[a-z0-9]\b")
COMMENT = re.compile(r"(^|\s)#.*$")


def _plugin_names():
    """apex_* words that name modules and action plugins, not variables."""
    names = set()
    for folder in ("plugins/modules", "plugins/action"):
        names.update(p.stem for p in (ROOT / folder).glob("apex_*.py"))
    return names


def _options(role):
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def shared_vars_read(role):
    """apex_* variables a role's own files (tasks, defaults, vars, handlers, templates) mention outside comments."""
    found = set()
    for path in (ROOT / "roles" / role).rglob("*"):
        if not path.is_file() or path.parts[-2:] == ("meta", "argument_specs.yml"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            found.update(NAME.findall(COMMENT.sub("", line)))
    return found - _plugin_names()


def test_the_scan_finds_what_roles_read():
    """Guards the scan itself: a role known to read these must be seen reading them."""
    assert {"apex_kube_context", "apex_pg_host", "apex_allow_interrupted", "apex_s3_bucket"} <= shared_vars_read("restore")
    assert "apex_report" not in shared_vars_read("restore")  # the action plugin, not a variable


@pytest.mark.parametrize("role", ROLES)
def test_role_declares_every_shared_variable_it_reads(role):
    missing = sorted(shared_vars_read(role) - set(_options(role)))
    assert not missing, "roles/%s/meta/argument_specs.yml does not declare %s" % (role, ", ".join(missing))


def test_shared_declarations_agree_across_roles():
    seen = {}
    for role in ROLES:
        for name, option in _options(role).items():
            if name.startswith("apex_"):
                shape = (option.get("type", "str"), bool(option.get("no_log")), bool(option.get("required")))
                seen.setdefault(name, {}).setdefault(shape, []).append(role)
    disagree = {name: shapes for name, shapes in seen.items() if len(shapes) > 1}
    assert not disagree, disagree


def test_secrets_are_no_log():
    for role in ROLES:
        for name, option in _options(role).items():
            if re.search(r"password|secret_key|token|access_key|api_key", name) and option.get("type", "str") == "str":
                assert option.get("no_log") is True, "%s in role %s" % (name, role)


def test_docs_variables_lists_every_shared_variable():
    page = (ROOT / "docs" / "variables.md").read_text()
    documented = set(re.findall(r"^\| `(apex_[a-z0-9_]+)`", page, re.M))
    declared = {name for role in ROLES for name in _options(role) if name.startswith("apex_")}
    assert declared - documented == set(), "docs/variables.md lacks %s" % sorted(declared - documented)
