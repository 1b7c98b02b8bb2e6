"""The initial state of each cluster: Apex as the runbook describes it."""
import base64
import os
from urllib.parse import quote

from . import registry

PRIMARY_ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
SECONDARY_ZONES = ["us-west-2a", "us-west-2b", "us-west-2c"]


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def _ns(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _node(i, zone, region, secondary):
    name = "node-%d" % i
    ip = "10.%d.1.%d" % (1 if not secondary else 2, 10 + i)
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m6i.2xlarge",
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region,
                "eks.amazonaws.com/nodegroup": "standard-workers"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": "10.244.%d.0/24" % i, "podCIDRs": ["10.244.%d.0/24" % i],
                     "providerID": "aws:///%s/i-0kubesim%04d" % (zone, i)},
            "status": {
                "capacity": {"cpu": "8", "memory": "32386524Ki", "pods": "110",
                             "ephemeral-storage": "104845292Ki"},
                "allocatable": {"cpu": "7910m", "memory": "31369692Ki", "pods": "110",
                                "ephemeral-storage": "95551679124"},
                "conditions": [
                    {"type": t, "status": "False", "reason": r, "message": m,
                     "lastHeartbeatTime": None, "lastTransitionTime": None}
                    for t, r, m in (
                        ("MemoryPressure", "KubeletHasSufficientMemory",
                         "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID",
                         "kubelet has sufficient PID available"))] + [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady",
                     "message": "kubelet is posting ready status", "lastHeartbeatTime": None,
                     "lastTransitionTime": None}],
                "addresses": [{"type": "InternalIP", "address": ip},
                              {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": "%032x" % i, "systemUUID": "ec2%029x" % i,
                             "bootID": "%032x" % (i * 7919),
                             "kernelVersion": "6.1.112-124.190.amzn2023.x86_64",
                             "osImage": "Amazon Linux 2023.6.20241031",
                             "containerRuntimeVersion": "containerd://1.7.23",
                             "kubeletVersion": "v1.32.4-eks", "kubeProxyVersion": "v1.32.4-eks",
                             "operatingSystem": "linux", "architecture": "amd64"}}}


def _probe(path, port=8080):
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP"}, "periodSeconds": 10,
            "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}


def _deploy(name, replicas, image, env, labels, cpu, mem, lim_cpu, lim_mem, ns="apex",
            port=8080, probes=True, extra_labels=None):
    tpl_labels = dict(labels)
    container = {"name": name.replace("apex-", ""), "image": image,
                 "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                 "env": env,
                 "resources": {"requests": {"cpu": cpu, "memory": mem},
                               "limits": {"cpu": lim_cpu, "memory": lim_mem}}}
    if probes:
        container["readinessProbe"] = _probe("/ready", port)
        container["livenessProbe"] = _probe("/live", port)
    meta_labels = dict(labels)
    meta_labels.update(extra_labels or {})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": meta_labels,
                         "annotations": {"meta.helm.sh/release-name": "apex",
                                         "meta.helm.sh/release-namespace": ns} if ns == "apex"
                         else {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": labels["app"]}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": tpl_labels},
                                  "spec": {"containers": [container],
                                           "terminationGracePeriodSeconds": 30}}}}


def _sts(name, image, port, cpu, mem, env=()):
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "apex", "labels": {"app": name}},
            "spec": {"replicas": 1, "serviceName": name,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{
                                      "name": name, "image": image,
                                      "ports": [{"containerPort": port, "name": name[:15]}],
                                      "env": list(env),
                                      "resources": {"requests": {"cpu": cpu, "memory": mem}},
                                      "volumeMounts": [{"name": "data",
                                                        "mountPath": "/var/lib/data"}]}]}},
                     "volumeClaimTemplates": [{
                         "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "metadata": {"name": "data"},
                         "spec": {"accessModes": ["ReadWriteOnce"],
                                  "resources": {"requests": {"storage": "50Gi"}}}}]}}


def _svc(name, selector, ports, ns="apex", headless=False, lb=False):
    spec = {"selector": selector, "ports": [
        {"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in ports]}
    if headless:
        spec["clusterIP"] = "None"
    if lb:
        spec["type"] = "LoadBalancer"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}}, "spec": spec}


def objects(secondary, env):
    """The seed objects in creation order."""
    zones = SECONDARY_ZONES if secondary else PRIMARY_ZONES
    region = zones[0][:-1]
    out = [_ns(n) for n in ("default", "kube-system", "kube-public", "kube-node-lease", "apex",
                            "ingress-nginx", "cert-manager")]
    for ns in ("default", "kube-system", "apex", "ingress-nginx", "cert-manager"):
        out.append({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": ns}})
    for i in range(1, 4):
        out.append(_node(i, zones[i - 1], region, secondary))
        out.append({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "node-%d" % i, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": "node-%d" % i, "leaseDurationSeconds": 40}})
    out.append(_svc("kubernetes", None, [("https", 443, 6443)], ns="default"))
    out[-1]["spec"].pop("selector")
    # a working URL of the lab database as role apex (what the migration Job connects with)
    password = env.get("APEX_PG_APP_PASSWORD")
    db_url = "postgresql://apex%s@127.0.0.1:%s/apex" % (
        ":" + quote(password, safe="") if password else "",
        env.get("PGPORT" if not secondary else "APEX_PG_STANDBY_PORT", "5432"))
    out.append({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "apex-secrets", "namespace": "apex",
                             "labels": {"app": "apex"}},
                "type": "Opaque",
                "data": {"database-url": _b64(db_url),
                         "redis-url": _b64("redis://127.0.0.1:%s/0" % env.get("APEX_REDIS_PORT",
                                                                               "6379")),
                         "openai-api-key": _b64("sk-lab-not-a-real-key"),
                         "anthropic-api-key": _b64("sk-ant-lab-not-a-real-key"),
                         "jwt-secret": _b64("lab-jwt-secret")}})
    out.append({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "apex-config", "namespace": "apex"},
                "data": {"APEX__LOG_LEVEL": "info", "APEX__ROUTING__DEFAULT_PROVIDER": "openai"}})
    api_env = [{"name": "APEX__MAINTENANCE_MODE", "value": "false"},
               {"name": "APEX__DATABASE__MAX_CONNECTIONS", "value": "10"},
               {"name": "APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "value": "5"},
               {"name": "APEX__DATABASE__URL", "valueFrom": {"secretKeyRef": {
                   "name": "apex-secrets", "key": "database-url"}}},
               {"name": "APEX__REDIS__URL", "valueFrom": {"secretKeyRef": {
                   "name": "apex-secrets", "key": "redis-url"}}}]
    worker_env = [{"name": "APEX__WORKER__CONCURRENCY", "value": "2"},
                  {"name": "APEX__DATABASE__MAX_CONNECTIONS", "value": "10"},
                  {"name": "APEX__DATABASE__URL", "valueFrom": {"secretKeyRef": {
                      "name": "apex-secrets", "key": "database-url"}}},
                  {"name": "APEX__REDIS__URL", "valueFrom": {"secretKeyRef": {
                      "name": "apex-secrets", "key": "redis-url"}}}]
    comp = {"app.kubernetes.io/part-of": "apex", "app.kubernetes.io/managed-by": "Helm"}
    out.append(_deploy("apex-api", 0 if secondary else 3, "apex/api:1.0.0", api_env,
                       {"app": "apex-api"}, "500m", "1Gi", "2", "2Gi", extra_labels=comp))
    out.append(_deploy("apex-worker", 0 if secondary else 5, "apex/worker:1.0.0", worker_env,
                       {"app": "apex-worker"}, "500m", "1Gi", "2", "2Gi", probes=False,
                       extra_labels=comp))
    out.append(_sts("postgresql", "postgres:15.8", 5432, "1", "4Gi", [
        {"name": "POSTGRES_USER", "value": "apex"}, {"name": "POSTGRES_DB", "value": "apex"}]))
    out.append(_sts("redis", "redis:7.2", 6379, "250m", "1Gi"))
    out.append(_svc("apex-api", {"app": "apex-api"}, [("http", 80, 8080)]))
    out.append(_svc("apex-worker", {"app": "apex-worker"}, [("metrics", 9090, 9090)]))
    out.append(_svc("postgresql", {"app": "postgresql"}, [("postgresql", 5432, 5432)],
                    headless=True))
    out.append(_svc("redis", {"app": "redis"}, [("redis", 6379, 6379)], headless=True))
    for name, mn, mx in (("apex-api", 3, 10), ("apex-worker", 5, 50)):
        out.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": name, "namespace": "apex", "labels": {"app": name}},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": name},
                             "minReplicas": mn, "maxReplicas": mx,
                             "metrics": [{"type": "Resource", "resource": {
                                 "name": "cpu", "target": {"type": "Utilization",
                                                           "averageUtilization": 70}}}]}})
    out.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "apex-api", "namespace": "apex"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "apex-api"}}}})
    out.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "apex-worker", "namespace": "apex"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "apex-worker"}}}})
    # cert-manager
    out.append({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                "metadata": {"name": "lab-ca", "namespace": "apex"},
                "spec": {"ca": {"secretName": "lab-ca-keypair"}}})
    out.append({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": "apex-tls", "namespace": "apex"},
                "spec": {"secretName": "apex-tls", "commonName": "apex.lab.test",
                         "dnsNames": ["apex.lab.test", "localhost"],
                         "ipAddresses": ["127.0.0.1"], "duration": "2160h0m0s",
                         "renewBefore": "360h0m0s",
                         "privateKey": {"algorithm": "RSA", "size": 2048,
                                        "rotationPolicy": "Always"},
                         "issuerRef": {"name": "lab-ca", "kind": "Issuer",
                                       "group": "cert-manager.io"}}})
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "nginx", "annotations": {
                    "ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": "k8s.io/ingress-nginx"}})
    out.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "apex", "namespace": "apex",
                             "annotations": {"cert-manager.io/issuer": "lab-ca",
                                             "nginx.ingress.kubernetes.io/proxy-body-size": "10m"}},
                "spec": {"ingressClassName": "nginx",
                         "tls": [{"hosts": ["apex.lab.test"], "secretName": "apex-tls"}],
                         "rules": [{"host": "apex.lab.test", "http": {"paths": [{
                             "path": "/", "pathType": "Prefix",
                             "backend": {"service": {"name": "apex-api",
                                                     "port": {"number": 80}}}}]}}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}})
    out.append({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "apex-db-backup", "namespace": "apex"},
                "spec": {"schedule": "0 2 * * *", "suspend": bool(secondary),
                         "concurrencyPolicy": "Forbid",
                         "jobTemplate": {"spec": {"backoffLimit": 1, "template": {"spec": {
                             "restartPolicy": "OnFailure",
                             "containers": [{"name": "backup", "image": "postgres:15.8",
                                             "command": ["/bin/sh", "-c",
                                                         "pg_dump -Fc apex | aws s3 cp - "
                                                         "s3://apex-backups/daily/apex.dump"],
                                             "env": [{"name": "DATABASE_URL", "valueFrom": {
                                                 "secretKeyRef": {"name": "apex-secrets",
                                                                  "key": "database-url"}}}]}]}}}}}})
    out.append(_deploy("ingress-nginx-controller", 2,
                       "registry.k8s.io/ingress-nginx/controller:v1.11.3", [
                           {"name": "POD_NAMESPACE", "value": "ingress-nginx"}],
                       {"app.kubernetes.io/name": "ingress-nginx",
                        "app.kubernetes.io/component": "controller", "app": "ingress-nginx"},
                       "100m", "90Mi", "1", "512Mi", ns="ingress-nginx", port=80, probes=False))
    out[-1]["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx",
                                                   "app.kubernetes.io/component": "controller"}}
    out[-1]["spec"]["strategy"] = {"type": "RollingUpdate",
                                   "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
    out.append(_svc("ingress-nginx-controller", {"app.kubernetes.io/name": "ingress-nginx",
                                                 "app.kubernetes.io/component": "controller"},
                    [("http", 80, 80), ("https", 443, 443)], ns="ingress-nginx", lb=True))
    out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "cert-manager", "namespace": "cert-manager",
                             "labels": {"app": "cert-manager"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cert-manager"}},
                         "template": {"metadata": {"labels": {"app": "cert-manager"}},
                                      "spec": {"containers": [{
                                          "name": "cert-manager-controller",
                                          "image": "quay.io/jetstack/cert-manager-controller:"
                                                   "v1.16.2"}]}}}})
    return out


HELM_OWNED = {("Deployment", "apex-api"), ("Deployment", "apex-worker"), ("Service", "apex-api"),
              ("HorizontalPodAutoscaler", "apex-api"), ("HorizontalPodAutoscaler", "apex-worker"),
              ("ConfigMap", "apex-config")}


def _helm_owned(obj):
    """What `helm install apex tests/lab/charts/apex -n apex` renders carries Helm's ownership
    metadata, so Helm adopts the seeded objects instead of refusing them."""
    meta = obj["metadata"]
    if meta.get("namespace") == "apex" and (obj["kind"], meta["name"]) in HELM_OWNED:
        meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
        meta.setdefault("annotations", {}).update({"meta.helm.sh/release-name": "apex",
                                                   "meta.helm.sh/release-namespace": "apex"})
    return obj


def seed(cluster, pki, secondary, env=None):
    env = dict(os.environ if env is None else env)
    for obj in objects(secondary, env):
        _helm_owned(obj)
        res = registry.resource_for_object(obj)
        status = obj.pop("status", None)
        created = cluster.create(res, obj)
        if status is not None:
            def put(o, status=status):
                o["status"] = status
                for c in o["status"].get("conditions") or []:
                    for k in ("lastHeartbeatTime", "lastTransitionTime"):
                        if k in c and c[k] is None:
                            c[k] = created["metadata"]["creationTimestamp"]
            cluster.mutate(res.storage, created["metadata"].get("namespace", ""),
                           created["metadata"]["name"], put, sub="status")
    ca = {"tls.crt": base64.b64encode(pki.cert_pem).decode(),
          "tls.key": base64.b64encode(pki.key_pem).decode()}
    cluster.create(registry.lookup("", "v1", "secrets"), {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "lab-ca-keypair", "namespace": "apex"}, "data": ca})
