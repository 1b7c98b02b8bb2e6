"""Read-only checks of the live clusters' seed (docs/kubesim.md "What is in the clusters"):
nothing here changes anything, so it runs against the shared lab as is."""
import base64
import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID


def _conds(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def test_ingress_apex_with_tls_secret(kube):
    ing = kube.kj("get", "ingress", "apex", "-n", "apex")
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["apex.lab.test"], "secretName": "apex-tls"}]
    rule = spec["rules"][0]
    assert rule["host"] == "apex.lab.test"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "apex-api", "port": {"number": 80}}
    assert kube.kj("get", "ingressclass", "nginx")["metadata"]["name"] == "nginx"
    secret = kube.kj("get", "secret", "apex-tls", "-n", "apex")
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = cert.extensions.get_extension_for_oid(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(x509.DNSName)
    assert "apex.lab.test" in sans
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN")


@pytest.mark.parametrize("context", ["apex-primary", "apex-secondary"])
def test_services(kube, context):
    def svc(ns, name):
        return kube.kj("get", "service", name, "-n", ns, context=context)["spec"]
    api = svc("apex", "apex-api")
    assert api["selector"] == {"app": "apex-api"} and api["ports"][0]["port"] == 80
    assert api["ports"][0]["targetPort"] == 8080
    assert svc("apex", "apex-worker")["selector"] == {"app": "apex-worker"}
    assert svc("apex", "postgresql")["ports"][0]["port"] == 5432
    redis = svc("apex", "redis")
    assert redis["clusterIP"] == "None" and redis["ports"][0]["port"] == 6379
    assert svc("ingress-nginx", "ingress-nginx-controller")["selector"][
        "app.kubernetes.io/name"] == "ingress-nginx"
    # the table of every Service (kubectl's default output) — including `kubernetes`, which
    # has no selector
    out = kube.kubectl("get", "services", "-A", context=context).stdout.splitlines()
    assert out[0].split()[:3] == ["NAMESPACE", "NAME", "TYPE"]
    names = {tuple(line.split()[:2]) for line in out[1:]}
    assert {("default", "kubernetes"), ("apex", "apex-api"), ("apex", "apex-worker"),
            ("apex", "postgresql"), ("apex", "redis"),
            ("ingress-nginx", "ingress-nginx-controller")} <= names


@pytest.mark.parametrize("context", ["apex-primary", "apex-secondary"])
def test_apex_secrets_keys(kube, context):
    sec = kube.kj("get", "secret", "apex-secrets", "-n", "apex", context=context)
    assert set(sec["data"]) >= {"database-url", "redis-url", "openai-api-key",
                                "anthropic-api-key", "jwt-secret"}
    url = base64.b64decode(sec["data"]["database-url"]).decode()
    assert url.startswith("postgresql://apex") and url.endswith("/apex")
    port = kube.lab_env.get("APEX_PG_STANDBY_PORT" if context == "apex-secondary" else "PGPORT")
    assert port and ":%s/" % port in url  # the lab database of that region
    assert base64.b64decode(sec["data"]["redis-url"]).decode().startswith("redis://")


def test_ingress_controller_deployment(kube):
    dep = kube.kj("get", "deployment", "ingress-nginx-controller", "-n", "ingress-nginx")
    c0 = dep["spec"]["template"]["spec"]["containers"][0]
    assert c0["image"].startswith("registry.k8s.io/ingress-nginx/controller:")
    assert dep["spec"]["replicas"] >= 1
    assert dep["status"].get("readyReplicas") == dep["spec"]["replicas"]
    assert _conds(dep)["Available"]["status"] == "True"


def test_primary_cronjob_runs_secondary_suspended(kube):
    primary = kube.kj("get", "cronjob", "apex-db-backup", "-n", "apex")
    secondary = kube.kj("get", "cronjob", "apex-db-backup", "-n", "apex",
                        context="apex-secondary")
    assert primary["spec"]["schedule"] == secondary["spec"]["schedule"] == "0 2 * * *"
    assert primary["spec"]["suspend"] is False
    assert secondary["spec"]["suspend"] is True
    table = kube.kubectl("get", "cronjob", "apex-db-backup", "-n", "apex",
                         context="apex-secondary").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND"]
    assert table[1].split()[7] == "True"  # NAME, SCHEDULE (5 fields), TIMEZONE, SUSPEND


def test_secondary_certificate_ready(kube):
    cert = kube.kj("get", "certificate", "apex-tls", "-n", "apex", context="apex-secondary")
    ready = _conds(cert)["Ready"]
    assert ready["status"] == "True", cert["status"]
    assert cert["spec"]["secretName"] == "apex-tls"
    assert "apex.lab.test" in cert["spec"]["dnsNames"]
    not_after = datetime.datetime.strptime(cert["status"]["notAfter"], "%Y-%m-%dT%H:%M:%SZ")
    assert not_after > datetime.datetime.utcnow()
    issuer = kube.kj("get", "issuer", "lab-ca", "-n", "apex", context="apex-secondary")
    assert _conds(issuer)["Ready"]["status"] == "True"
    sec = kube.kj("get", "secret", "apex-tls", "-n", "apex", context="apex-secondary")
    assert sec["type"] == "kubernetes.io/tls" and sec["data"]["tls.crt"]
