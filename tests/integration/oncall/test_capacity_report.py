"""The capacity_report playbook against the lab, one run on a state the test sets up: the API at its HPA
max (maxReplicas lowered to the current 3), the workers at 10 % of their CPU request (the simulator's
utilisation annotation, which its metrics.k8s.io serves), 60 tasks on the test's own queue key, and an RDS
instance in moto with 20 GiB allocated and 2 GiB free in CloudWatch. The run reports the
recommendations for that state and expands the RDS storage (asserted in moto); the module refuses the
expansions it must refuse; the HTML page is opened in headless Chromium and its screenshot must show
the charts' bars in their colours."""
import json
import os
import shutil
import struct
import subprocess
import uuid
import zlib

import pytest

NS = "apex"
UTIL = "kubesim.apex.dev/cpu-utilization"
GIB = 1024 ** 3
RED, GREEN, BLUE = (0xc6, 0x28, 0x28), (0x2e, 0x7d, 0x32), (0x15, 0x65, 0xc0)


def kubectl(lab, *args):
    proc = subprocess.run(["kubectl", "--context", "apex-primary", "-n", NS] + list(args), capture_output=True,
                          text=True, env=dict(os.environ, **lab), timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def aws(lab, service):
    import boto3

    return boto3.client(service, endpoint_url=lab["AWS_ENDPOINT_URL"], region_name=lab["AWS_REGION"],
                        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"], aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"])


def png_pixels(data):
    """(width, height, rows of RGB tuples) of an 8-bit non-interlaced RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, dummy, dummy2, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 4 if colour == 6 else 3
    raw, stride, rows, previous = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append([tuple(line[x * channels:x * channels + 3]) for x in range(width)])
        previous = line
    return width, height, rows


@pytest.fixture(scope="module")
def capacity(lab, run_playbook, tmp_path_factory):
    import redis

    reports = tmp_path_factory.mktemp("capacity-reports")
    tag = uuid.uuid4().hex[:8]
    instance, queue = "apex-lab-capacity-%s" % tag, "test-capacity-%s:queue" % tag
    rds, cloudwatch = aws(lab, "rds"), aws(lab, "cloudwatch")
    rds.create_db_instance(DBInstanceIdentifier=instance, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="apex", MasterUserPassword="lab-%s" % tag)
    cloudwatch.put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "FreeStorageSpace", "Unit": "Bytes", "Value": 2 * GIB,
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": instance}]}])
    client = redis.Redis(host=lab["APEX_REDIS_HOST"], port=int(lab["APEX_REDIS_PORT"]), password=lab["APEX_REDIS_PASSWORD"])
    try:
        client.rpush(queue, *["task-%d" % i for i in range(60)])
        kubectl(lab, "annotate", "deployment/apex-worker", "%s=10" % UTIL, "--overwrite")
        kubectl(lab, "patch", "hpa/apex-api", "--type=merge", "-p", '{"spec": {"maxReplicas": 3}}')
        proc = run_playbook("playbooks/capacity_report.yml", {
            "apex_report_dir": str(reports), "capacity_report_rds_instance": instance,
            "capacity_report_queue_key": queue, "capacity_report_expand_storage_gib": 40,
            "capacity_report_confirm_expand": instance})
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
        json_file = sorted(reports.glob("capacity_report-*.json"))[-1]
        yield dict(report=json.loads(json_file.read_text()), html=json_file.with_suffix(".html"), instance=instance,
                   rds=rds, stdout=proc.stdout, tmp=tmp_path_factory.mktemp("capacity-shot"))
    finally:
        client.delete(queue)
        client.close()
        kubectl(lab, "annotate", "deployment/apex-worker", UTIL + "-")
        kubectl(lab, "patch", "hpa/apex-api", "--type=merge", "-p", '{"spec": {"maxReplicas": 10}}')
        rds.delete_db_instance(DBInstanceIdentifier=instance, SkipFinalSnapshot=True)


def test_capacity_table_for_the_state_set_up(capacity):
    rows = dict((r["key"], r) for r in capacity["report"]["table"])
    assert rows["api_pods"]["percent"] == 100.0 and rows["api_pods"]["status"] == "action"
    assert rows["api_pods"]["current"] == "3 of 3-3 (HPA)"
    storage = rows["db_storage"]
    assert storage["used"] == 18 * GIB and storage["capacity"] == 20 * GIB and storage["percent"] == 90.0
    assert storage["status"] == "action" and "CloudWatch FreeStorageSpace" in storage["detail"]
    assert rows["node_cpu"]["status"] in ("ok", "warning") and rows["node_cpu"]["capacity"] > 0
    assert capacity["report"]["status"] == "action"


def test_recommendations_and_cost_notes(capacity):
    report = capacity["report"]
    texts = [r["text"] for r in report["recommendations"]]
    assert any(t.startswith("API Pods at 100.0% of the HPA max (3 of 3-3 (HPA)): increase the HPA max, e.g. to 5")
               for t in texts), texts
    assert "Worker queue depth at 60 (warning above 50): Add workers (ansible-playbook apex.ops.alert_queue_backlog)" \
        in texts
    assert any(t.startswith("DB storage at 90.0% (critical above 85%)") for t in texts), texts
    expand = [r for r in report["recommendations"] if r.get("suggested_gib")]
    assert expand and expand[0]["suggested_gib"] == 36  # 18 GiB used, 50 % after
    worker_cpu = [n for n in report["cost_notes"] if n["workload"] == "apex-worker" and n["resource"] == "cpu"]
    assert worker_cpu and 8 <= worker_cpu[0]["percent_of_request"] <= 12, report["cost_notes"]
    assert not [n for n in report["cost_notes"] if n["workload"] == "apex-api" and n["resource"] == "cpu"]
    outlook = report["node_outlook"]
    assert outlook["nodes"] == 3 and outlook["nodes_needed_at_hpa_max"] >= outlook["nodes_needed_now"]


def test_the_expansion_ran_and_rds_says_so(capacity):
    found = capacity["rds"].describe_db_instances(DBInstanceIdentifier=capacity["instance"])["DBInstances"][0]
    assert found["AllocatedStorage"] == 40
    expansion = capacity["report"]["expansion"]
    assert expansion["changed"] and expansion["plan"]["from_gib"] == 20 and expansion["plan"]["to_gib"] == 40


def test_refused_expansions_change_nothing(capacity, run_module):
    base = dict(state="expand", rds_instance=capacity["instance"])
    # every refusal is unit-tested (test_capacity.py); here the live instance's figures reach the plan
    cases = [(dict(expand_storage_gib=42, confirm=capacity["instance"]), "under the 10% growth AWS requires"),
             (dict(expand_storage_gib=60), "needs confirm=%s" % capacity["instance"])]
    for args, why in cases:
        res = run_module("apex_capacity", **dict(base, **args))
        assert res.failed and why in res["refused"], (args, res.get("msg"))
    res = run_module("apex_capacity", check_mode=True, **dict(base, expand_storage_gib=60, confirm=capacity["instance"]))
    assert res["changed"] and res["expansion"]["to_gib"] == 60
    found = capacity["rds"].describe_db_instances(DBInstanceIdentifier=capacity["instance"])["DBInstances"][0]
    assert found["AllocatedStorage"] == 40


def test_the_html_page_shows_the_charts_in_chromium(capacity):
    html = capacity["html"].read_text()
    assert "<svg" in html and 'id="usage-chart"' in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is missing: run tests/lab/install-deps.sh"
    shot = capacity["tmp"] / "capacity.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=900,1000", "--screenshot=%s" % shot, capacity["html"].as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    counts = dict((colour, 0) for colour in (RED, GREEN, BLUE))
    for row in rows:
        for pixel in row:
            if pixel in counts:
                counts[pixel] += 1
    # bars are 18 px high: red (API pods and storage at their action points), green (under the warning
    # levels), blue (use of the requests) - each well beyond what a legend swatch (12 x 12) would give
    assert counts[RED] > 2000 and counts[GREEN] > 1000 and counts[BLUE] > 2000, counts
