#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: apex_dns
short_description: Point Apex's public name at a region in Route53 and read where it points
version_added: "0.2.0"
description:
  - Reads a Route53 record (its type, TTL and values) and follows CNAMEs inside the zone to the name
    and addresses it finally points at.
  - Sets a simple record (CNAME, A or AAAA) or the two records of a failover routing policy pair
    (C(Failover) PRIMARY and SECONDARY) with one UPSERT change batch, then waits until Route53 reports
    the change C(INSYNC).
  - Idempotent - a record that already says what is wanted is not touched (no change batch is sent).
  - Uses boto3; the credentials fall back to the variables the AWS clients know.
author:
  - Apex platform team (@apex-platform)
options:
  state:
    description:
      - V(facts) reads the record and where it resolves to; changes nothing.
      - V(present) makes the record say O(value) (or O(failover_pair)).
    type: str
    choices: [facts, present]
    default: facts
  zone_id:
    description:
      - Hosted zone id. Falls back to E(APEX_ROUTE53_ZONE_ID). One of O(zone_id) and O(zone) is needed.
    type: str
  zone:
    description:
      - Hosted zone name, looked up when O(zone_id) is not given. Falls back to E(APEX_ROUTE53_ZONE).
    type: str
  record:
    description:
      - The record's name (a trailing dot is added). Falls back to E(APEX_ROUTE53_RECORD).
    type: str
    required: true
  type:
    description:
      - Record type.
    type: str
    choices: [CNAME, A, AAAA]
    default: CNAME
  value:
    description:
      - With O(state=present), the record's values (one for a CNAME).
    type: list
    elements: str
  ttl:
    description:
      - TTL of the record in seconds. Keep it short on a name that fails over - clients keep the old
        answer for up to this long after the change.
    type: int
    default: 60
  failover_pair:
    description:
      - With O(state=present), set a failover routing policy pair instead of a simple record - the
        C(primary) value gets C(Failover=PRIMARY), the C(secondary) value C(Failover=SECONDARY). A region
        failover swaps them.
    type: dict
    suboptions:
      primary:
        description: Value of the PRIMARY record.
        type: str
        required: true
      secondary:
        description: Value of the SECONDARY record.
        type: str
        required: true
      primary_set_identifier:
        description: SetIdentifier of the PRIMARY record.
        type: str
        default: primary
      secondary_set_identifier:
        description: SetIdentifier of the SECONDARY record.
        type: str
        default: secondary
      primary_health_check_id:
        description: Route53 health check of the PRIMARY record (Route53 needs one to fail over by itself).
        type: str
  wait:
    description:
      - Wait until Route53 reports the change C(INSYNC).
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait for C(INSYNC).
    type: raw
    default: 5m
  endpoint_url:
    description:
      - Route53 endpoint. Falls back to E(AWS_ENDPOINT_URL_ROUTE53), E(AWS_ENDPOINT_URL).
    type: str
  region:
    description:
      - AWS region for the client. Falls back to E(AWS_REGION), E(AWS_DEFAULT_REGION).
    type: str
    default: us-east-1
  access_key:
    description:
      - Access key. Falls back to E(AWS_ACCESS_KEY_ID).
    type: str
    aliases: [aws_access_key]
  secret_key:
    description:
      - Secret key. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
    aliases: [aws_secret_key]
  session_token:
    description:
      - Session token. Falls back to E(AWS_SESSION_TOKEN).
    type: str
notes:
  - Supports check mode and diff mode.
requirements:
  - boto3
"""

EXAMPLES = r"""
- name: Where does the public name point?
  apex.ops.apex_dns:
    zone: example.com
    record: apex.example.com
  register: dns

- name: Point the public name at the secondary region
  apex.ops.apex_dns:
    state: present
    zone: example.com
    record: apex.example.com
    type: CNAME
    value: [secondary.example.com]
    ttl: 60

- name: Swap a failover routing policy pair
  apex.ops.apex_dns:
    state: present
    zone: example.com
    record: apex.example.com
    failover_pair:
      primary: secondary.example.com
      secondary: primary.example.com
"""

RETURN = r"""
records:
  description: The record sets named O(record) before any change (name, type, ttl, values; set_identifier and failover for a pair).
  returned: always
  type: list
  elements: dict
  sample: [{name: apex.example.com., type: CNAME, ttl: 60, values: [primary.example.com.]}]
resolves_to:
  description:
    - After any change, the chain of names followed inside the zone (C(chain)), and the final C(addresses).
      For a failover pair, the PRIMARY record is followed.
  returned: always
  type: dict
  sample: {chain: [apex.example.com., secondary.example.com.], addresses: [10.1.2.3]}
change:
  description: The change sent - C(id), C(status) (INSYNC after the wait), C(insync_seconds).
  returned: changed and not check mode
  type: dict
"""

from ansible.module_utils.basic import env_fallback

from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule, import_error_of
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

BOTO3_IMPORT_ERROR = import_error_of(lambda: __import__("boto3"))

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="facts", choices=["facts", "present"]),
    zone_id=dict(type="str", fallback=(env_fallback, ["APEX_ROUTE53_ZONE_ID"])),
    zone=dict(type="str", fallback=(env_fallback, ["APEX_ROUTE53_ZONE"])),
    record=dict(type="str", required=True, fallback=(env_fallback, ["APEX_ROUTE53_RECORD"])),
    type=dict(type="str", default="CNAME", choices=["CNAME", "A", "AAAA"]),
    value=dict(type="list", elements="str"),
    ttl=dict(type="int", default=60),
    failover_pair=dict(type="dict", options=dict(
        primary=dict(type="str", required=True),
        secondary=dict(type="str", required=True),
        primary_set_identifier=dict(type="str", default="primary"),
        secondary_set_identifier=dict(type="str", default="secondary"),
        primary_health_check_id=dict(type="str"),
    )),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="raw", default="5m"),
    endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_ROUTE53", "AWS_ENDPOINT_URL"])),
    region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"]), default="us-east-1"),
    access_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"]), aliases=["aws_access_key"]),
    secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"]), aliases=["aws_secret_key"]),
    session_token=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
)


def wanted_records(p):
    """The simplified records O(state=present) asks for."""
    from ansible_collections.apex.ops.plugins.module_utils.route53_records import fqdn

    def target(value):
        return fqdn(value) if p["type"] == "CNAME" else value
    name = fqdn(p["record"])
    pair = p["failover_pair"]
    if pair:
        primary = dict(name=name, type=p["type"], ttl=p["ttl"], values=[target(pair["primary"])],
                       set_identifier=pair["primary_set_identifier"], failover="PRIMARY")
        if pair.get("primary_health_check_id"):
            primary["health_check_id"] = pair["primary_health_check_id"]
        return [primary, dict(name=name, type=p["type"], ttl=p["ttl"], values=[target(pair["secondary"])],
                              set_identifier=pair["secondary_set_identifier"], failover="SECONDARY")]
    return [dict(name=name, type=p["type"], ttl=p["ttl"], values=sorted(target(v) for v in p["value"]))]


def run(module):
    from ansible_collections.apex.ops.plugins.module_utils import route53_records as r53

    p = module.params
    client = r53.make_client(p)
    zone_id = r53.zone_id_of(client, p["zone_id"], p["zone"])
    before = r53.read_records(client, zone_id, p["record"])
    result = dict(changed=False, records=before, zone_id=zone_id)
    if p["state"] == "present":
        rrsets = []
        for want in wanted_records(p):
            current = [r for r in before if r["type"] == want["type"]
                       and r.get("set_identifier") == want.get("set_identifier")]
            change = r53.plan(current[0] if current else None, want)
            if change:
                rrsets.append(change)
        if rrsets:
            result["changed"] = True
            if module._diff:
                result["diff"] = dict(before=dict(records=before), after=dict(records=wanted_records(p)))
            if not module.check_mode:
                change_id, status = r53.apply(client, zone_id, rrsets, "apex.ops apex_dns: %s" % fqdn_list(rrsets))
                result["change"] = dict(id=change_id, status=status)
                if p["wait"] and status != "INSYNC":
                    result["change"]["insync_seconds"] = round(
                        r53.wait_insync(client, change_id, parse_duration(p["wait_timeout"], "wait_timeout")), 3)
                    result["change"]["status"] = "INSYNC"
    chain, addresses = r53.resolve(client, zone_id, p["record"]) if not p["failover_pair"] else \
        _resolve_pair(r53, client, zone_id, p)
    result["resolves_to"] = dict(chain=chain, addresses=addresses)
    return result


def _resolve_pair(r53, client, zone_id, p):
    primary = [r for r in r53.read_records(client, zone_id, p["record"]) if r.get("failover") == "PRIMARY"]
    if not primary:
        return [r53.fqdn(p["record"])], []
    chain, addresses = r53.resolve(client, zone_id, primary[0]["values"][0])
    return [r53.fqdn(p["record"])] + chain, addresses


def fqdn_list(rrsets):
    return ", ".join("%s %s -> %s" % (r["Name"], r.get("Failover", r["Type"]), r["ResourceRecords"][0]["Value"])
                     for r in rrsets)


def main():
    module = ApexModule(ARGUMENT_SPEC, requirements=(("boto3", BOTO3_IMPORT_ERROR),), supports_check_mode=True,
                        required_one_of=[("zone_id", "zone")],
                        required_if=[("state", "present", ("value", "failover_pair"), True)],
                        mutually_exclusive=[("value", "failover_pair")])
    from ansible_collections.apex.ops.plugins.module_utils.route53_records import DnsError

    p = module.params
    try:
        parse_duration(p["wait_timeout"], "wait_timeout")
    except ValueError as exc:
        module.fail(str(exc))
    if p["state"] == "present" and p["type"] == "CNAME" and p["value"] and len(p["value"]) != 1:
        module.fail("a CNAME has exactly one value, got %d" % len(p["value"]))
    try:
        result = run(module)
    except DnsError as exc:
        module.fail(str(exc), last_state=exc.last_state)
    except Exception as exc:  # pylint: disable=broad-except
        # botocore errors: the message names the API call and the error code, never the credentials
        module.fail("Route53 request failed", exception=exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
