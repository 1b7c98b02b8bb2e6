# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary Deployment, pure: a copy of the live stable Deployment's spec with only the API
container's image tag and the ``track`` label changed, sized for a share of the traffic.

The runbook's manifest leaves "rest of spec" to the reader; copying the live spec keeps the
env, secrets, probes and resources the stable pods run with, so the canary differs from stable
by its image only. Refusals raise ``WorkloadError`` (nothing is written)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import math
import re

from ansible_collections.apex.ops.plugins.module_utils.k8s_objects import WorkloadError

TRACK_LABEL = "track"
CANARY_OF = "apex.ops/canary-of"
STABLE_IMAGE = "apex.ops/stable-image"
# what belongs to the stable object or to Helm, not to a copy: Helm must never think it owns the canary
DROP_ANNOTATIONS = ("deployment.kubernetes.io/revision", "kubernetes.io/change-cause",
                    "kubectl.kubernetes.io/last-applied-configuration")
DROP_ANNOTATION_PREFIXES = ("meta.helm.sh/",)
DROP_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def canary_replicas(stable_replicas, weight):
    """Replicas that give the canary about ``weight`` percent of the traffic when the Service
    spreads requests evenly over ready pods: ``n / (stable + n) >= weight``, at least one."""
    if not 0 < weight < 100:
        raise WorkloadError("the canary weight must be between 0 and 100 percent (exclusive), got %s" % weight)
    stable = max(int(stable_replicas or 0), 0)
    share = weight / 100.0
    return max(1, int(math.ceil(share * stable / (1.0 - share) - 1e-9)))


def traffic_share(stable_replicas, canary):
    """The canary's share (percent) of requests with that many ready pods on each side."""
    total = (stable_replicas or 0) + canary
    return round(100.0 * canary / total, 1) if total else 0.0


def with_tag(image, tag):
    """``image`` with its tag replaced (registry ports and digests handled)."""
    if not TAG.match(str(tag)):
        raise WorkloadError("%r is not a valid image tag" % (tag,))
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[:len(name) - len(last)] + last.split(":", 1)[0]
    return "%s:%s" % (name, tag)


def image_tag(image):
    """The tag of an image reference (``latest`` when none, the digest when pinned by one)."""
    if not image:
        return None
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def api_container(deployment, container=None):
    """The container the canary changes: the one named, else the only one, else ``api``."""
    name = (deployment.get("metadata") or {}).get("name")
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if container:
        for candidate in containers:
            if candidate.get("name") == container:
                return candidate
        raise WorkloadError("Deployment %s has no container %r (it has %s)"
                            % (name, container, ", ".join(c.get("name") or "?" for c in containers) or "none"))
    if len(containers) == 1:
        return containers[0]
    for candidate in containers:
        if candidate.get("name") == "api":
            return candidate
    raise WorkloadError("Deployment %s has %d containers: name the API container (container)" % (name, len(containers)))


def build_canary(stable, name, tag, replicas, container=None, track="canary"):
    """``(manifest, plan)``: the canary Deployment and what differs from stable."""
    meta = stable.get("metadata") or {}
    stable_name = meta.get("name")
    labels = dict(meta.get("labels") or {})
    if labels.get(TRACK_LABEL) == track:
        raise WorkloadError("%s is itself labelled %s=%s: give the stable Deployment" % (stable_name, TRACK_LABEL, track))
    spec = copy.deepcopy(stable.get("spec") or {})
    spec.pop("paused", None)
    spec["replicas"] = int(replicas)
    selector = spec.setdefault("selector", {}).setdefault("matchLabels", {})
    selector[TRACK_LABEL] = track
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta.setdefault("labels", {})[TRACK_LABEL] = track
    # the stable's restart stamp is no part of the canary's identity
    (template_meta.get("annotations") or {}).pop("kubectl.kubernetes.io/restartedAt", None)
    target = api_container({"metadata": meta, "spec": spec}, container)
    stable_image = target.get("image") or ""
    target["image"] = with_tag(stable_image, tag)
    for key in DROP_LABELS:
        labels.pop(key, None)
    labels[TRACK_LABEL] = track
    annotations = dict((k, v) for k, v in (meta.get("annotations") or {}).items()
                       if k not in DROP_ANNOTATIONS and not k.startswith(DROP_ANNOTATION_PREFIXES))
    annotations[CANARY_OF] = stable_name
    annotations[STABLE_IMAGE] = stable_image
    manifest = dict(apiVersion="apps/v1", kind="Deployment",
                    metadata=dict(name=name, namespace=meta.get("namespace"), labels=labels, annotations=annotations),
                    spec=spec)
    plan = dict(stable=stable_name, canary=name, container=target.get("name"), stable_image=stable_image,
                image=target["image"], stable_version=image_tag(stable_image), version=tag, replicas=int(replicas),
                labels={TRACK_LABEL: track})
    return manifest, plan


def same_canary(live, manifest):
    """True when the live canary already is the wanted one (spec and labels), so nothing is written."""
    if live is None:
        return False
    want, have = manifest["spec"], live.get("spec") or {}
    return (have.get("replicas") == want.get("replicas") and have.get("selector") == want.get("selector")
            and _template(have) == _template(want)
            and (live.get("metadata") or {}).get("labels") == manifest["metadata"]["labels"])


def _template(spec):
    template = copy.deepcopy(spec.get("template") or {})
    for container in (template.get("spec") or {}).get("containers") or []:
        container.pop("terminationMessagePath", None)
        container.pop("terminationMessagePolicy", None)
    return template
