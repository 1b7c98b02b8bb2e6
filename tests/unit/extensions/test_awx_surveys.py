"""The AWX surveys in extensions/awx/surveys are what make_surveys.py generates from the roles'
argument specs (so they cannot drift), have the shape AWX accepts, and ask secrets as passwords."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SURVEYS = ROOT / "extensions" / "awx" / "surveys"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_surveys", ROOT / "extensions" / "awx" / "make_surveys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
COMMITTED = sorted(SURVEYS.glob("*.json"))


def _options(role):
    return GEN.role_spec(role)["options"]


def test_committed_surveys_are_what_the_generator_writes():
    wanted = GEN.generate()
    assert sorted(wanted) == [p.name for p in COMMITTED], "run: python3 extensions/awx/make_surveys.py"
    for path in COMMITTED:
        assert path.read_text() == wanted[path.name], "%s is stale; run: python3 extensions/awx/make_surveys.py" % path


def test_one_survey_per_playbook():
    playbooks = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml") if not p.name.startswith("_"))
    assert [p.stem for p in COMMITTED] == playbooks


def test_check_mode_reports_drift(tmp_path):
    assert GEN.main(["--out", str(tmp_path)]) == 0
    assert GEN.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / "scale.json"
    victim.write_text(victim.read_text().replace("scale_wait_timeout", "scale_wait_timeot"))
    (tmp_path / "gone.json").write_text("{}")
    assert GEN.main(["--check", "--out", str(tmp_path)]) == 1
    assert GEN.main(["--out", str(tmp_path)]) == 0
    assert not (tmp_path / "gone.json").exists() and GEN.main(["--check", "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_awx_survey_shape(path):
    survey = json.loads(path.read_text())
    assert set(survey) == {"name", "description", "spec"}
    assert survey["name"] == "apex.ops." + path.stem and survey["description"]
    assert isinstance(survey["spec"], list) and survey["spec"]
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables))
    options = _options(GEN.playbook_roles()[path.stem])
    for item in survey["spec"]:
        where = "%s: %s" % (path.name, item.get("variable"))
        assert {"question_name", "question_description", "variable", "type", "required", "default"} <= set(item), where
        assert item["question_name"] and isinstance(item["question_name"], str), where
        assert item["variable"] in options, where
        assert item["type"] in GEN.AWX_TYPES, where
        assert isinstance(item["required"], bool), where
        if item["type"] in ("multiplechoice", "multiselect"):
            assert item["choices"] and all(isinstance(c, str) for c in item["choices"]), where
            assert item["default"] == "" or item["default"] in item["choices"], where
        elif item["type"] == "integer":
            assert item["default"] == "" or isinstance(item["default"], int), where
        elif item["type"] == "float":
            assert item["default"] == "" or isinstance(item["default"], float), where
        else:
            assert isinstance(item["default"], str) and item["min"] <= len(item["default"]) <= item["max"], where
        if options[item["variable"]].get("required"):
            assert item["required"] is True, where


def test_every_role_option_is_asked_or_deliberately_left_to_the_inventory():
    for playbook, role in GEN.playbook_roles().items():
        asked = {q["variable"] for q in json.loads((SURVEYS / (playbook + ".json")).read_text())["spec"]}
        for name, option in _options(role).items():
            if name in asked:
                continue
            templated = isinstance(option.get("default"), str) and "{{" in option["default"]
            assert name.startswith("apex_") or templated or option.get("type") in ("list", "dict"), (playbook, name)


def test_secrets_are_password_questions():
    seen = 0
    for path in COMMITTED:
        options = _options(GEN.playbook_roles()[path.stem])
        for item in json.loads(path.read_text())["spec"]:
            option = options[item["variable"]]
            secret = option.get("no_log") or GEN.SECRET_NAME.search(item["variable"])
            if secret:
                seen += 1
                assert item["type"] == "password" and item["default"] == "", (path.name, item["variable"])
            else:
                assert item["type"] != "password", (path.name, item["variable"])
    assert seen >= 2  # cert_renew's key and passphrase: the rule is exercised


def test_question_mapping():
    assert GEN.question("x_pw", {"type": "str", "no_log": True, "default": "s3cret"}, "x")["default"] == ""
    assert GEN.question("x_db_password", {"type": "str"}, "x")["type"] == "password"
    flag = GEN.question("x_wait", {"type": "bool", "default": True, "description": "Wait (C(true))."}, "x")
    assert flag["type"] == "multiplechoice" and flag["default"] == "true" and flag["choices"] == ["true", "false"]
    assert flag["question_description"] == "Wait (true)." and flag["question_name"] == "Wait"
    pick = GEN.question("x_mode", {"type": "str", "choices": ["a", "b"], "default": "b"}, "x")
    assert (pick["type"], pick["default"]) == ("multiplechoice", "b")
    assert GEN.question("x_n", {"type": "int"}, "x") == {
        "question_name": "N", "question_description": "", "variable": "x_n", "required": False,
        "type": "integer", "default": ""}
    assert GEN.question("x_cert_pem", {"type": "str", "default": ""}, "x")["type"] == "textarea"
    assert not GEN.asked("x_dir", {"type": "str", "default": "{{ apex_report_dir }}"})
    assert not GEN.asked("x_list", {"type": "list", "default": []})
    assert GEN.asked("apex_allow_interrupted", {"type": "str"}) and not GEN.asked("apex_pg_host", {"type": "str"})


def test_playbooks_map_to_their_roles():
    mapping = GEN.playbook_roles()
    assert mapping["scale"] == "scale" and mapping["backup_prune"] == "backup_prune"
    for playbook, role in mapping.items():
        assert (ROOT / "roles" / role / "meta" / "argument_specs.yml").is_file()
        plays = yaml.safe_load((ROOT / "playbooks" / (playbook + ".yml")).read_text())
        assert any("apex.ops." + role in str(play.get("roles")) for play in plays)
