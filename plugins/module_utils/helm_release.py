# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helm releases of Apex: install/upgrade, rollback and facts (the engine of ``apex_release``).

Helm is reached through ``helm_client.HelmSession`` (``helm``) and the cluster through the
collection's lean client (``kube``): Helm does the release work, the cluster reads say what it
did (the plan against the live objects, the workloads' rollouts, what was not ready when an
upgrade failed). Decisions that need no I/O (values merging, "is this upgrade a no-op") are plain
functions, unit-tested.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.apex.ops.plugins.module_utils import manifest_diff as md
from ansible_collections.apex.ops.plugins.module_utils.helm_client import HelmCallError
from ansible_collections.apex.ops.plugins.module_utils.k8s_info import pod_summary
from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import selector_string
from ansible_collections.apex.ops.plugins.module_utils.k8s_rollout import rollout_state
from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until

WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class ReleaseError(Exception):
    """A release step failed; ``details`` are the result keys that say how (``returned: failure``)."""

    def __init__(self, msg, **details):
        Exception.__init__(self, msg)
        self.details = details


# --------------------------------------------------------------------------- pure decisions


def deep_merge(base, override):
    """Helm's coalescing of user values: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_values(values_files=(), values=None, set_values=(), parse_set=None, read=None):
    """The user values of a release, in Helm's order: each values file, then ``values``, then each
    ``--set`` expression (``parse_set`` turns one into a dict, with Helm's own parser)."""
    read = read or _read_yaml_file
    merged = {}
    for path in values_files or ():
        doc = read(path)
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ReleaseError("values file %s is not a YAML mapping" % path)
        merged = deep_merge(merged, doc)
    if values:
        merged = deep_merge(merged, values)
    for expression in set_values or ():
        merged = deep_merge(merged, parse_set(expression))
    return merged


def _read_yaml_file(path):
    import yaml  # PyYAML comes with ansible-core; imported here as the sanity import test requires

    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except (IOError, OSError) as exc:
        raise ReleaseError("cannot read values file %s: %s" % (path, exc))
    except yaml.YAMLError as exc:
        raise ReleaseError("values file %s is not valid YAML: %s" % (path, exc))


def chart_source(chart):
    """``(kind, reference)`` of a chart: ``directory``, ``package`` (.tgz) or ``oci``."""
    if chart.startswith("oci://"):
        return "oci", chart
    path = os.path.abspath(os.path.expanduser(chart))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "Chart.yaml")):
            raise ReleaseError("chart directory %s has no Chart.yaml" % path)
        return "directory", path
    if os.path.isfile(path) and (path.endswith(".tgz") or path.endswith(".tar.gz")):
        return "package", path
    raise ReleaseError("chart %s is neither a chart directory, a packaged chart (.tgz) nor an oci:// reference"
                       % chart)


def deployed_entry(history):
    """The history entry with status ``deployed`` (the newest if several), or None."""
    deployed = [entry for entry in history or () if entry.get("status") == "deployed"]
    return max(deployed, key=lambda entry: entry["revision"]) if deployed else None


def is_noop(current, planned, values):
    """True when an upgrade would only copy the deployed revision: same chart, same user values,
    same rendered manifest. ``current`` is ``get_all`` of the deployed revision, ``planned`` the
    dry-run's release."""
    summary = current.get("summary") or {}
    return (summary.get("chart_name") == planned.get("chart_name")
            and summary.get("chart_version") == planned.get("chart_version")
            and summary.get("app_version") == planned.get("app_version")
            and (current.get("config") or {}) == (values or {})
            and (summary.get("manifest") or "") == (planned.get("manifest") or ""))


def revision_facts(entry, detail=None):
    """One revision as ``state=facts`` reports it."""
    info = (detail or {}).get("info") or {}
    return dict(revision=entry.get("revision"), status=entry.get("status"),
                chart="%s-%s" % (entry.get("chart_name"), entry.get("chart_version")),
                chart_name=entry.get("chart_name"), chart_version=entry.get("chart_version"),
                app_version=entry.get("app_version"), description=info.get("description"),
                first_deployed=info.get("first_deployed"), last_deployed=info.get("last_deployed"),
                deployed_at=entry.get("deployed_at"))


def workload_targets(objects, namespace):
    """``(kind, namespace, name, images)`` of the workloads in a manifest."""
    targets = []
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        meta = obj.get("metadata") or {}
        containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        targets.append((obj["kind"], meta.get("namespace") or namespace, meta.get("name"),
                        dict((c.get("name"), c.get("image")) for c in containers)))
    return targets


def workload_report(kind, name, live, images, pods=()):
    """Rollout of one workload: state, counts, whether it runs the manifest's images, and the
    pods that are not ready with why."""
    if live is None:
        return dict(kind=kind, name=name, rollout="missing", message="not found in the cluster", ready=False,
                    images_expected=images, images=None, pods_not_ready=[])
    spec, status = live.get("spec") or {}, live.get("status") or {}
    state, message = rollout_state(live, kind)
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    live_images = dict((c.get("name"), c.get("image")) for c in containers)
    not_ready = []
    for pod in pods:
        summary = pod_summary(pod)
        if not summary["ready"]:
            not_ready.append(dict(name=summary["name"], reason=summary["not_ready_reason"],
                                  images=summary["images"]))
    desired = spec.get("replicas", 1)
    ready = state == "complete" and live_images == images and (status.get("readyReplicas") or 0) >= (desired or 0)
    return dict(kind=kind, name=name, rollout=state, message=message, ready=ready, desired=desired,
                ready_replicas=status.get("readyReplicas") or 0, updated=status.get("updatedReplicas") or 0,
                images=live_images, images_expected=images, pods_not_ready=not_ready)


# --------------------------------------------------------------------------- cluster reads


class Cluster(object):
    """The cluster reads the engine needs, on the collection's lean client."""

    def __init__(self, client):
        self.client = client
        self._resources = {}

    def _resource(self, api_version, kind):
        """``(base path, plural, namespaced)`` from API discovery, cached per group/version."""
        base = "/api/%s" % api_version if "/" not in api_version else "/apis/%s" % api_version
        if base not in self._resources:
            listing = self.client.get(base)
            self._resources[base] = dict((r["kind"], (r["name"], r.get("namespaced", True)))
                                         for r in listing.get("resources") or [] if "/" not in r["name"])
        found = self._resources[base].get(kind)
        if found is None:
            return None
        return base, found[0], found[1]

    def live(self, obj, namespace):
        """The live object a manifest object describes, or None."""
        from ansible_collections.apex.ops.plugins.module_utils import k8s

        try:
            resource = self._resource(obj.get("apiVersion") or "v1", obj["kind"])
        except k8s.KubeApiError as exc:
            if exc.not_found:  # the API group is not served (a CRD not installed yet)
                return None
            raise
        if resource is None:
            return None
        base, plural, namespaced = resource
        meta = obj.get("metadata") or {}
        if namespaced:
            path = "%s/namespaces/%s/%s/%s" % (base, meta.get("namespace") or namespace, plural, meta["name"])
        else:
            path = "%s/%s/%s" % (base, plural, meta["name"])
        return k8s.get_or_none(self.client, path)

    def workloads(self, targets, with_pods=False):
        reports = []
        for kind, namespace, name, images in targets:
            live = self.live({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}}, namespace)
            pods = ()
            if with_pods and live is not None:
                selector = selector_string((live.get("spec") or {}).get("selector"))
                pods = self.client.list("/api/v1/namespaces/%s/pods" % namespace, label_selector=selector)
                pods = pods.get("items") or []
            reports.append(workload_report(kind, name, live, images, pods))
        return reports


# --------------------------------------------------------------------------- the engine


class ReleaseEngine(object):
    """``present``, ``rolledback`` and ``facts`` of one release."""

    def __init__(self, helm, cluster, params, check_mode=False, clock=time.monotonic):
        self.helm = helm
        self.cluster = cluster
        self.p = params
        self.check_mode = check_mode
        self.clock = clock
        self.name = params["name"]
        self.namespace = params["namespace"]

    # -- helpers
    def history(self):
        try:
            return self.helm.call("history", name=self.name)
        except HelmCallError as exc:
            if exc.not_found:
                return []
            raise

    def _wait_option(self):
        return "watcher" if self.p["wait"] else None

    def _plan(self, desired_manifest, previous_manifest):
        desired = md.parse_manifest(desired_manifest)
        plan = md.plan_objects(desired, md.parse_manifest(previous_manifest),
                               lambda obj: self.cluster.live(obj, self.namespace), self.namespace)
        return desired, plan

    def _release_result(self, release):
        return dict(name=self.name, namespace=self.namespace, revision=release.get("revision"),
                    status=release.get("status"), chart="%s-%s" % (release.get("chart_name"), release.get("chart_version")),
                    app_version=release.get("app_version"))

    def _verify_rollouts(self, objects, deadline):
        """Every workload of the manifest rolled out with the manifest's images (Helm waited;
        this reads what the cluster says, and waits only for status that lags)."""
        targets = workload_targets(objects, self.namespace)
        if not targets:
            return []
        outcome = poll_until(lambda: self.cluster.workloads(targets),
                             lambda reports: all(r["ready"] for r in reports), deadline)
        if not outcome:
            reports = self.cluster.workloads(targets, with_pods=True)
            raise ReleaseError("the release is deployed but its workloads did not roll out within the timeout: %s"
                               % "; ".join("%s/%s %s (%s)" % (r["kind"], r["name"], r["rollout"], r["message"])
                                           for r in reports if not r["ready"]),
                               not_ready=[r for r in reports if not r["ready"]])
        return outcome.last

    # -- state=present
    def present(self, chart, values):
        kind, ref = chart_source(chart)
        history = self.history()
        deployed = deployed_entry(history)
        if history and deployed is None:
            raise ReleaseError("release %s in namespace %s has revisions but none is deployed (last: revision %s, %s); "
                               "roll it back to a good revision or uninstall it first"
                               % (self.name, self.namespace, history[-1]["revision"], history[-1]["status"]),
                               history=[revision_facts(entry) for entry in history])
        mode = "upgrade" if deployed else "install"
        chart_args = dict(chart=ref, name=self.name, values=values)
        if self.p.get("chart_version"):
            chart_args["chart_version"] = self.p["chart_version"]
        if mode == "install" and self.p.get("create_namespace"):
            chart_args["create_namespace"] = True
        planned = self.helm.call(mode, dry_run="server", **chart_args)
        current = self.helm.call("get_all", name=self.name) if deployed else {}
        previous_manifest = (current.get("summary") or {}).get("manifest") or ""
        desired, plan = self._plan(planned.get("manifest"), previous_manifest)
        noop = bool(deployed) and is_noop(current, planned, values)
        result = dict(changed=not noop, action="none" if noop else mode, chart_source=kind,
                      revision_before=deployed["revision"] if deployed else None,
                      plan=md.plan_summary(plan), diff=md.diff_entries(plan),
                      manifest_digest=md.manifest_digest(planned.get("manifest")))
        if noop:
            result.update(release=self._release_result(deployed), revision_after=deployed["revision"])
            return result
        if self.check_mode:
            result["revision_after"] = None
            return result
        deadline = Deadline(self.p["timeout"], clock=self.clock)
        started = self.clock()
        try:
            release = self.helm.call(mode, wait=self._wait_option(), timeout=self.p["timeout"], **chart_args)
        except HelmCallError as exc:
            self._failed(mode, exc, desired, deployed, started)
        result["timings"] = dict(helm_seconds=round(self.clock() - started, 3))
        result["workloads"] = self._verify_rollouts(desired, deadline) if self.p["wait"] else []
        result.update(release=self._release_result(release), revision_after=release.get("revision"))
        return result

    def _failed(self, mode, exc, desired, deployed, started):
        """Report a failed install/upgrade: Helm's error, what was not ready (read before anything
        is undone), and with ``atomic`` the revision the release returned to."""
        failed_at = self.clock()
        not_ready = [r for r in self.cluster.workloads(workload_targets(desired, self.namespace), with_pods=True)
                     if not r["ready"]]
        history = self.history()
        details = dict(helm_error=str(exc), revision_before=deployed["revision"] if deployed else None,
                       failed_revision=history[-1]["revision"] if history else None, not_ready=not_ready,
                       returned_to_revision=None, rolled_back=False)
        what = "%s of release %s (namespace %s) failed: %s" % (mode, self.name, self.namespace, exc)
        if not self.p["atomic"]:
            details["timings"] = dict(helm_seconds=round(failed_at - started, 3))
            raise ReleaseError(what + "; atomic is off, the failed revision stays", **details)
        try:
            if deployed:
                self.helm.call("rollback", name=self.name, version=deployed["revision"],
                               wait=self._wait_option(), timeout=self.p["timeout"])
                back = deployed_entry(self.history())
                details.update(rolled_back=True, returned_to_revision=back["revision"] if back else None,
                               restored_revision=deployed["revision"])
                what += "; rolled back to revision %s (now revision %s)" % (
                    deployed["revision"], details["returned_to_revision"])
            else:
                self.helm.call("uninstall", name=self.name, wait=self._wait_option(), timeout=self.p["timeout"])
                details["rolled_back"] = True
                what += "; the failed install was uninstalled"
        except HelmCallError as undo:
            details["rollback_error"] = str(undo)
            what += "; and undoing it failed too: %s" % undo
        details["timings"] = dict(helm_seconds=round(failed_at - started, 3),
                                  rollback_seconds=round(self.clock() - failed_at, 3))
        if not_ready:
            what += ". Not ready: %s" % "; ".join(
                "%s/%s %s (%s)%s" % (r["kind"], r["name"], r["rollout"], r["message"],
                                     "".join(", pod %s: %s" % (p["name"], p["reason"]) for p in r["pods_not_ready"][:3]))
                for r in not_ready)
        raise ReleaseError(what, **details)

    # -- state=rolledback
    def rolledback(self, revision=None):
        history = self.history()
        if not history:
            raise ReleaseError("release %s not found in namespace %s" % (self.name, self.namespace))
        deployed = deployed_entry(history)
        current_revision = deployed["revision"] if deployed else history[-1]["revision"]
        target = revision if revision is not None else current_revision - 1
        known = dict((entry["revision"], entry) for entry in history)
        if target not in known:
            raise ReleaseError("release %s has no revision %s (revisions kept: %s)"
                               % (self.name, target, ", ".join(str(r) for r in sorted(known)) or "none"),
                               history=[revision_facts(entry) for entry in history])
        target_all = self.helm.call("get_all", name=self.name, revision=target)
        current_all = self.helm.call("get_all", name=self.name, revision=current_revision)
        target_manifest = (target_all.get("summary") or {}).get("manifest") or ""
        desired, plan = self._plan(target_manifest, (current_all.get("summary") or {}).get("manifest"))
        # a newer revision than the deployed one (pending-upgrade after an interrupt, failed without atomic) has
        # applied its objects: returning to the deployed revision's content is then a real rollback, not a no-op
        same = bool(deployed) and deployed["revision"] == history[-1]["revision"] and \
            is_noop(current_all, target_all.get("summary") or {}, target_all.get("config"))
        result = dict(changed=not same, target_revision=target, revision_before=current_revision,
                      plan=md.plan_summary(plan), diff=md.diff_entries(plan),
                      manifest_digest=md.manifest_digest(target_manifest))
        if same:
            result.update(revision_after=current_revision, release=self._release_result(deployed))
            return result
        if self.check_mode:
            result["revision_after"] = None
            return result
        deadline = Deadline(self.p["timeout"], clock=self.clock)
        started = self.clock()
        try:
            self.helm.call("rollback", name=self.name, version=target, wait=self._wait_option(),
                           timeout=self.p["timeout"])
        except HelmCallError as exc:
            not_ready = [r for r in self.cluster.workloads(workload_targets(desired, self.namespace), with_pods=True)
                         if not r["ready"]]
            raise ReleaseError("rollback of release %s to revision %s failed: %s" % (self.name, target, exc),
                               helm_error=str(exc), revision_before=current_revision, not_ready=not_ready,
                               returned_to_revision=(deployed_entry(self.history()) or {}).get("revision"))
        result["timings"] = dict(helm_seconds=round(self.clock() - started, 3))
        # verify: the deployed revision is the new one and it carries the target's manifest
        now = deployed_entry(self.history())
        now_all = self.helm.call("get_all", name=self.name, revision=now["revision"]) if now else {}
        if not now or now["revision"] <= current_revision or \
                (now_all.get("summary") or {}).get("manifest") != target_manifest:
            raise ReleaseError("rollback of release %s to revision %s reported success but the deployed revision is %s"
                               % (self.name, target, now and now["revision"]), revision_before=current_revision,
                               returned_to_revision=now and now["revision"], not_ready=[])
        result["workloads"] = self._verify_rollouts(desired, deadline) if self.p["wait"] else []
        result.update(revision_after=now["revision"], release=self._release_result(now))
        return result

    # -- state=facts
    def facts(self):
        history = self.history()
        if not history:
            return dict(changed=False, exists=False, revisions=[], deployed=None)
        revisions = [revision_facts(entry, self.helm.call("get_all", name=self.name, revision=entry["revision"]))
                     for entry in history]
        deployed = deployed_entry(history)
        facts = None
        if deployed:
            full = self.helm.call("get_all", name=self.name, revision=deployed["revision"])
            manifest = (full.get("summary") or {}).get("manifest") or ""
            facts = dict(revision_facts(deployed, full),
                         values=md.mask_sensitive_values(full.get("config") or {}),
                         manifest_digest=md.manifest_digest(manifest),
                         objects=[md.object_key(obj, self.namespace) for obj in md.parse_manifest(manifest)])
        return dict(changed=False, exists=True, revisions=revisions, deployed=facts,
                    release=self._release_result(deployed) if deployed else None)
