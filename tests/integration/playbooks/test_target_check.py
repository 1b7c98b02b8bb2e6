"""Every playbook fails loudly when its target pattern matches no host (issue 9: an inventory
without ``apex_control`` used to make a run do nothing and exit 0), and runs where
``apex_target_hosts`` points at a host of the inventory."""
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOKS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml") if not p.name.startswith("_"))
TARGET = "{{ apex_target_hosts | default('apex_control') }}"


def _inventory(tmp_path, group="ops", host="ctl"):
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {group: {"hosts": {host: {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}}}))
    return str(inv)


def _reports(report_dir):
    return sorted(p.name for p in Path(report_dir).glob("*.json"))


def test_every_playbook_imports_the_check_first_and_targets_the_variable():
    assert len(PLAYBOOKS) >= 15
    for name in PLAYBOOKS:
        plays = yaml.safe_load((ROOT / "playbooks" / name).read_text())
        first = plays[0]
        assert first.get("ansible.builtin.import_playbook") == "_target_check.yml", name
        for play in plays[1:]:
            assert play["hosts"] == TARGET, name


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_inventory_without_the_group_fails_loudly(run_playbook, tmp_path, playbook):
    """Before: "skipping: no hosts matched", exit 0, nothing done."""
    reports = tmp_path / "reports"
    reports.mkdir()
    res = run_playbook("playbooks/" + playbook, extra_vars={"apex_report_dir": str(reports)},
                       extra_args=["-i", _inventory(tmp_path)])
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "apex_target_hosts='apex_control' matches no host of the inventory" in out, out
    assert "-e apex_target_hosts=" in out
    assert _reports(reports) == []  # the procedure did not start


def test_fqcn_form_fails_loudly_too(run_playbook, tmp_path):
    res = run_playbook("apex.ops.backup_prune", extra_args=["-i", _inventory(tmp_path)], check=True)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "matches no host of the inventory" in out, out


def test_empty_inventory_fails_loudly(run_playbook, tmp_path):
    empty = tmp_path / "empty.yml"
    empty.write_text("all: {}\n")
    res = run_playbook("playbooks/health_check.yml", extra_args=["-i", str(empty)])
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "matches no host of the inventory" in out, out


def test_limit_outside_the_target_fails_loudly(run_playbook, tmp_path):
    inv = tmp_path / "two.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inv.write_text(yaml.safe_dump({"all": {"children": {"apex_control": {"hosts": {"ctl": host}},
                                                        "other": {"hosts": {"elsewhere": host}}}}}))
    res = run_playbook("playbooks/backup_prune.yml", check=True, extra_args=["-i", str(inv), "--limit", "elsewhere"])
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "within --limit elsewhere" in out, out


@pytest.mark.parametrize("form", ["playbooks/health_check.yml", "apex.ops.health_check"])
def test_target_variable_pointing_at_a_host_runs_the_procedure(run_playbook, tmp_path, form):
    reports = tmp_path / "reports"
    reports.mkdir()
    res = run_playbook(form, extra_vars={"apex_report_dir": str(reports), "apex_target_hosts": "ctl",
                                         "health_check_fail_on_critical": False},
                       extra_args=["-i", _inventory(tmp_path)])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "ctl" in res.stdout and "no hosts matched" not in out
    names = _reports(reports)
    assert len(names) == 1, names  # the role ran on ctl and wrote its report
    report = json.loads((reports / names[0]).read_text())
    assert report
