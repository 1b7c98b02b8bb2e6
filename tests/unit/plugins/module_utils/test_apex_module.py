"""The module base: merged argspecs, dependency checks, one way to fail."""
import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.apex.ops.plugins.module_utils import apex_module, common_args


def set_module_args(args):
    args = dict(args, _ansible_remote_tmp="/tmp", _ansible_keep_remote_files=False)
    basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    # ansible-core 2.19 reads the profile-aware serialized args
    basic._ANSIBLE_PROFILE = "legacy"


class Exited(Exception):
    pass


@pytest.fixture
def capture(monkeypatch):
    results = {}

    def fake_exit(self, **kwargs):
        results.update(kwargs, failed=False)
        raise Exited()

    def fake_fail(self, msg, **kwargs):
        results.update(kwargs, msg=msg, failed=True)
        raise Exited()

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", fake_exit)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fake_fail)
    return results


def test_fragments_are_merged_and_env_fallbacks_apply(monkeypatch, capture):
    monkeypatch.setenv("PGPORT", "6543")
    set_module_args({"extra": "x"})
    module = apex_module.ApexModule(dict(extra=dict(type="str")), fragments=(common_args.POSTGRES_ARGSPEC,))
    assert module.params["login_port"] == 6543
    assert module.params["extra"] == "x"
    # the shared constant is not mutated by merging
    assert "extra" not in common_args.POSTGRES_ARGSPEC


def test_missing_dependency_names_the_package(capture):
    set_module_args({})
    with pytest.raises(Exited):
        apex_module.ApexModule({}, requirements=(("psycopg[binary]>=3.1", "Traceback: ImportError"),))
    assert capture["failed"]
    assert "psycopg[binary]>=3.1" in capture["msg"]


def test_fail_carries_exception_and_last_state(capture):
    set_module_args({})
    module = apex_module.ApexModule({})
    error = None
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        error = exc
    with pytest.raises(Exited):
        module.fail("scale did not finish", exception=error, last_state={"ready": "1/3"})
    assert capture["last_state"] == {"ready": "1/3"}
    assert "RuntimeError: boom" in capture["msg"]
    assert "Traceback" in capture["exception"]


def test_import_error_of_reports_missing_module():
    assert apex_module.import_error_of(lambda: __import__("json")) is None
    assert "ImportError" in apex_module.import_error_of(lambda: __import__("no_such_module_apex"))


def test_find_error_of_checks_presence_without_importing():
    import sys
    sys.modules.pop("tabnanny", None)
    assert apex_module.find_error_of("tabnanny") is None
    assert "tabnanny" not in sys.modules  # located, not imported: a module that does not use it pays nothing
    assert "ImportError" in apex_module.find_error_of("no_such_module_apex")


def test_every_credential_option_is_no_log():
    for spec in (common_args.POSTGRES_ARGSPEC, common_args.REDIS_ARGSPEC, common_args.K8S_ARGSPEC, common_args.S3_ARGSPEC):
        for name, option in spec.items():
            if any(word in name for word in ("password", "secret", "token", "api_key")):
                assert option.get("no_log") is True, name
