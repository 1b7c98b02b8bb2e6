"""moto: S3 (bucket ``apex-backups``, versioned), Route53 (zone ``apex.lab.test.``) and RDS."""
import json
import os
import sys
import time

from .procs import (LabError, answers, exited, find_pid, healthy, http_get, say, spawn, status_row, stop_procs,
                    wait_until)
from .state import load_json, write_private

S3_BUCKET = "apex-backups"
DNS_ZONE = "apex.lab.test."
DNS_RECORD = "apex.apex.lab.test."
DNS_TARGETS = {"primary.apex.lab.test.": "127.0.0.1", "secondary.apex.lab.test.": "127.0.0.2"}
AWS_REGION = "us-east-1"
MARK_MOTO = "-m moto.server "  # command-line marker (precise: `pytest .../moto` must not match)


class Moto:
    """``start`` spawns without waiting, ``ensure(proc)`` waits and creates the resources once."""

    def __init__(self, state):
        self.state = state
        self.moto_dir = state.moto_dir

    def procs(self):
        return (("moto", self.moto_dir / "moto.pid", MARK_MOTO, self.pid),)

    def stop(self):
        return stop_procs(self.procs(), bool(self.state.ports))

    def pid(self):
        return find_pid(self.moto_dir / "moto.pid", MARK_MOTO, self.state.ports.get("moto"))

    def buckets(self):
        status, body = http_get("127.0.0.1", self.state.ports["moto"], "/")
        if status != 200 or b"ListAllMyBucketsResult" not in body:
            raise LabError("moto answered %s" % status)
        return body

    def start(self):
        """Spawn moto (non-blocking: it imports for a second while PostgreSQL starts)."""
        if self.pid():
            return None
        port = self.state.claim_port("moto")
        return spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                     self.moto_dir / "moto.pid", self.moto_dir / "moto.log",
                     dict(os.environ, PYTHONUNBUFFERED="1", APEX_LAB_DIR=str(self.state.dir)), self.moto_dir)

    def ensure(self, proc):
        log = self.moto_dir / "moto.log"
        if proc is None and not answers(self.buckets, 15):
            say("moto (pid %s) does not answer; restarting it" % self.pid())
            self.stop()
            proc = self.start()
        wait_until(self.buckets, 30, "moto on %d" % self.state.ports["moto"], log=log,
                   gone=exited(proc, self.pid))
        saved = load_json(self.moto_dir / "state.json") or {}
        body = self.buckets()
        if (proc is None and saved.get("pid") == self.pid() and saved.get("zone_id")
                and ("<Name>%s</Name>" % S3_BUCKET).encode() in body):
            return False
        zone_id = self._resources()
        write_private(self.moto_dir / "state.json",
                      json.dumps({"pid": self.pid(), "zone_id": zone_id}) + "\n", 0o644)
        say("moto up on 127.0.0.1:%d (bucket %s, zone %s %s)"
            % (self.state.ports["moto"], S3_BUCKET, DNS_ZONE, zone_id))
        return True

    def _route53(self):
        import boto3
        return boto3.client("route53", **self._client_args())

    def point_public_name(self, region="primary"):
        """``apex.`` CNAME back at a region (after a failover test moved it)."""
        zone_id = (load_json(self.moto_dir / "state.json") or {}).get("zone_id")
        if not zone_id:
            raise LabError("moto has no zone yet; run `lab.py up` first")
        self._route53().change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
            "Comment": "lab.py: apex points at the %s region" % region, "Changes": [{
                "Action": "UPSERT", "ResourceRecordSet": {
                    "Name": DNS_RECORD, "Type": "CNAME", "TTL": 60,
                    "ResourceRecords": [{"Value": "%s.%s" % (region, DNS_ZONE)}]}}]})

    def _client_args(self):
        return dict(endpoint_url="http://127.0.0.1:%d" % self.state.ports["moto"], region_name=AWS_REGION,
                    aws_access_key_id=self.state.secrets["aws_access_key_id"],
                    aws_secret_access_key=self.state.secrets["aws_secret_access_key"])

    def _resources(self):
        import boto3
        kw = dict(endpoint_url="http://127.0.0.1:%d" % self.state.ports["moto"], region_name=AWS_REGION,
                  aws_access_key_id=self.state.secrets["aws_access_key_id"],
                  aws_secret_access_key=self.state.secrets["aws_secret_access_key"])
        s3 = boto3.client("s3", **kw)
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        if S3_BUCKET not in names:
            s3.create_bucket(Bucket=S3_BUCKET)
            s3.put_bucket_versioning(Bucket=S3_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        r53 = boto3.client("route53", **kw)
        zones = [z for z in r53.list_hosted_zones_by_name(DNSName=DNS_ZONE).get("HostedZones", [])
                 if z["Name"] == DNS_ZONE]
        if zones:
            zone_id = zones[0]["Id"].split("/")[-1]
        else:
            zone_id = r53.create_hosted_zone(Name=DNS_ZONE, CallerReference="apex-lab-%d" % time.time(),
                                             HostedZoneConfig={"Comment": "apex.ops lab",
                                                               "PrivateZone": False})["HostedZone"]["Id"].split("/")[-1]
            changes = [{"Action": "UPSERT", "ResourceRecordSet": {
                "Name": name, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": ip}]}}
                for name, ip in DNS_TARGETS.items()]
            changes.append({"Action": "UPSERT", "ResourceRecordSet": {
                "Name": DNS_RECORD, "Type": "CNAME", "TTL": 60,
                "ResourceRecords": [{"Value": "primary.apex.lab.test."}]}})
            r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                "Comment": "apex.ops lab: apex points at the primary region", "Changes": changes})
        return zone_id

    def status_rows(self):
        pid = self.pid()
        ok = bool(pid) and healthy(self.buckets)
        return [status_row("moto", self.state.ports.get("moto"), pid, ok, "S3/Route53/RDS" if ok else "down")]
