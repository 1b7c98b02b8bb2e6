# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Route53 records for ``apex_dns``: read a record set, the pure change plan, apply it and wait
until Route53 reports the change INSYNC.

A record is identified by name, type and (for a routing-policy pair) its set identifier. The
plan compares what is there with what is wanted and returns the one UPSERT that makes them
equal, or nothing: that is what makes the module idempotent and its diff exact.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.apex.ops.plugins.module_utils.waiting import Deadline, poll_until


class DnsError(Exception):
    """A Route53 request failed or a wait timed out; ``last_state`` is what was seen."""

    def __init__(self, msg, last_state=None):
        super(DnsError, self).__init__(msg)
        self.last_state = last_state


def fqdn(name):
    return name if name.endswith(".") else name + "."


def make_client(params):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=params.get("access_key") or None,
        aws_secret_access_key=params.get("secret_key") or None,
        aws_session_token=params.get("session_token") or None,
        region_name=params.get("region") or "us-east-1")
    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
    return session.client("route53", endpoint_url=params.get("endpoint_url") or None, config=config)


def zone_id_of(client, zone_id=None, zone=None):
    """The hosted zone id (without ``/hostedzone/``), given it or the zone name."""
    if zone_id:
        return zone_id.split("/")[-1]
    zones = [z for z in client.list_hosted_zones_by_name(DNSName=fqdn(zone)).get("HostedZones", [])
             if z["Name"] == fqdn(zone)]
    if not zones:
        raise DnsError("no hosted zone named %s" % fqdn(zone))
    return zones[0]["Id"].split("/")[-1]


def simplify(rrset):
    """The parts of a ResourceRecordSet this module manages, in a comparable shape."""
    out = dict(name=rrset["Name"], type=rrset["Type"], ttl=rrset.get("TTL"),
               values=sorted(r["Value"] for r in rrset.get("ResourceRecords", [])))
    if "SetIdentifier" in rrset:
        out["set_identifier"] = rrset["SetIdentifier"]
    if "Failover" in rrset:
        out["failover"] = rrset["Failover"]
    if "HealthCheckId" in rrset:
        out["health_check_id"] = rrset["HealthCheckId"]
    return out


def read_records(client, zone_id, name, rtype=None):
    """Every record set named ``name`` (of ``rtype`` when given), simplified."""
    name = fqdn(name)
    kwargs = dict(HostedZoneId=zone_id, StartRecordName=name)
    if rtype:
        kwargs["StartRecordType"] = rtype
    found = []
    for rrset in client.list_resource_record_sets(MaxItems="100", **kwargs).get("ResourceRecordSets", []):
        if rrset["Name"].rstrip(".").lower() != name.rstrip(".").lower():
            break
        if rtype and rrset["Type"] != rtype:
            continue
        found.append(simplify(rrset))
    return found


def resolve(client, zone_id, name, max_hops=5):
    """Follow CNAMEs inside the zone: ``[name, target, ...]`` and the final A values (if any)."""
    chain, name = [fqdn(name)], fqdn(name)
    for _hop in range(max_hops):
        recs = read_records(client, zone_id, name)
        cname = [r for r in recs if r["type"] == "CNAME" and "set_identifier" not in r]
        if cname:
            name = fqdn(cname[0]["values"][0])
            chain.append(name)
            continue
        addresses = [v for r in recs if r["type"] in ("A", "AAAA") for v in r["values"]]
        return chain, addresses
    return chain, []


def plan(current, wanted):
    """The UPSERT ResourceRecordSet that turns ``current`` (a simplified record or None) into
    ``wanted`` (same shape), or None when they already agree. Pure."""
    if current is not None and all(current.get(k) == wanted.get(k)
                                   for k in ("type", "ttl", "values", "set_identifier", "failover",
                                             "health_check_id")):
        return None
    rrset = {"Name": fqdn(wanted["name"]), "Type": wanted["type"], "TTL": wanted["ttl"],
             "ResourceRecords": [{"Value": v} for v in wanted["values"]]}
    if wanted.get("set_identifier"):
        rrset["SetIdentifier"] = wanted["set_identifier"]
    if wanted.get("failover"):
        rrset["Failover"] = wanted["failover"]
    if wanted.get("health_check_id"):
        rrset["HealthCheckId"] = wanted["health_check_id"]
    return rrset


def apply(client, zone_id, rrsets, comment):
    """One change batch of UPSERTs; returns the change id."""
    change = client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
        "Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": r} for r in rrsets]})
    return change["ChangeInfo"]["Id"].split("/")[-1], change["ChangeInfo"]["Status"]


def wait_insync(client, change_id, timeout, clock=time.monotonic, sleep=time.sleep):
    """Poll GetChange until INSYNC (Route53 has the change on all its name servers)."""
    def status():
        return client.get_change(Id=change_id)["ChangeInfo"]["Status"]

    result = poll_until(status, lambda s: s == "INSYNC", Deadline(timeout, clock), interval=0.5, max_interval=5,
                        sleep=sleep)
    if not result:
        raise DnsError("change %s still %s after %ss" % (change_id, result.last, timeout),
                       last_state=dict(change_id=change_id, status=result.last))
    return result.elapsed
