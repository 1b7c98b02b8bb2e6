"""apex_report's attachments (the canary's SVG chart) and the journal's canary undo step: pure, no services."""
import json
import os
import stat

from ansible_collections.apex.ops.plugins.action.apex_report import attachment_path, write_report
from ansible_collections.apex.ops.plugins.module_utils.journal import describe_undo


def test_attachment_sits_beside_the_report_with_its_stem(tmp_path):
    report = str(tmp_path / "canary-20261202T061500123456Z.json")
    svg = attachment_path(report, "svg")
    assert svg == str(tmp_path / "canary-20261202T061500123456Z.svg")
    write_report(svg, None, text="<svg/>\n")
    write_report(report, {"attachments": {"svg": svg}})
    assert open(svg).read() == "<svg/>\n" and json.load(open(report))["attachments"]["svg"] == svg
    assert stat.S_IMODE(os.stat(svg).st_mode) == 0o640
    assert sorted(os.listdir(str(tmp_path))) == ["canary-20261202T061500123456Z.json", "canary-20261202T061500123456Z.svg"]


def test_journal_names_the_canary_to_delete():
    text = describe_undo({"action": "canary_remove", "name": "apex-api-canary"})
    assert text.startswith("delete the canary Deployment 'apex-api-canary'")
