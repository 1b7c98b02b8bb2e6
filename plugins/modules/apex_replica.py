#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: apex_replica
short_description: Streaming replication of the Apex database - facts, promotion, fencing, catch-up
version_added: "0.2.0"
description:
  - Reads the replication facts of either end of a streaming pair (the server the connection options name)
    - on a primary its standbys (state, sent and replayed LSN, lag in bytes and seconds), on a standby its
    WAL receiver (status, sender, timeline) and what it received and replayed.
  - Promotes a standby with C(pg_promote()) over SQL (no exec into a pod, no shell) and waits until the
    promoted server commits a write.
  - Fences an old primary that is still reachable so two primaries never take writes - the application
    role may no longer log in, its sessions are terminated, and new transactions default to read-only.
  - Waits on a primary until a named standby has replayed everything (zero lag), for a planned switchover.
  - A separate module from M(apex.ops.apex_db_maint) on purpose (docs/failover.md) - these are the
    region failover's steps, each with its own safety rule.
author:
  - Apex platform team (@apex-platform)
extends_documentation_fragment:
  - apex.ops.postgres
options:
  state:
    description:
      - V(facts) reads the replication facts and changes nothing.
      - V(promote) promotes the standby (already a primary - nothing to do, not changed). It refuses
        while replay is paused, when O(require_streaming) is set and the WAL receiver is not streaming
        (unless O(allow_data_loss)), and when more received WAL than O(max_replay_lag_bytes) is not yet replayed.
      - V(fence) fences the server (the old primary).
      - V(caught_up) waits, on a primary, until the standby O(application_name) has replayed all WAL.
      - V(rebuild) turns the data directory O(data_dir) on this host into a streaming standby of the server the
        connection options name (the new primary) - failback. It stops the server on O(data_dir), tries
        C(pg_rewind) (only the diverged blocks; needs C(wal_log_hints) or data checksums), else takes a fresh
        C(pg_basebackup) and keeps the diverged directory aside (RV(rebuild)), keeps the target's own
        O(keep_files), writes C(standby.signal) and C(primary_conninfo) (the replication role, O(application_name)),
        starts it and waits until the new primary reports it streaming. Needs O(confirm) = O(data_dir).
    type: str
    choices: [facts, promote, fence, caught_up, rebuild]
    default: facts
  require_streaming:
    description:
      - With O(state=promote), refuse unless the standby is streaming from its primary.
    type: bool
    default: true
  allow_data_loss:
    description:
      - With O(state=promote), promote a standby that is not streaming (the primary is gone). What it has
        not received is lost - RV(data_loss_window) says up to where the data is kept.
    type: bool
    default: false
  max_replay_lag_bytes:
    description:
      - With O(state=promote), the most received-but-not-replayed WAL accepted.
    type: int
    default: 16777216
  app_role:
    description:
      - With O(state=fence), the application role refused from now on.
      - With O(state=promote), the application role allowed to log in on the promoted server - the fence's
        C(NOLOGIN) on the old primary is replicated to the standby before it is promoted. Empty leaves roles alone.
    type: str
    default: apex
  wait_caught_up:
    description:
      - With O(state=fence), then wait (as V(caught_up) does) until the standby O(application_name) has replayed
        all WAL - the planned failover's fence and zero-lag wait in one call.
    type: bool
    default: false
  application_name:
    description:
      - With O(state=caught_up) (or O(wait_caught_up)), the standby's C(application_name) in C(pg_stat_replication).
    type: str
    default: apex-standby
  data_dir:
    description:
      - With O(state=rebuild), the data directory to rebuild (on the host the module runs on).
    type: path
  confirm:
    description:
      - With O(state=rebuild), must be the O(data_dir) - what the old server wrote after the promotion is
        discarded (a base backup keeps the old directory aside).
    type: str
    default: ""
  method:
    description:
      - With O(state=rebuild), V(auto) tries C(pg_rewind) and falls back to C(pg_basebackup); V(rewind) fails
        instead of falling back; V(basebackup) always copies afresh.
    type: str
    choices: [auto, rewind, basebackup]
    default: auto
  bin_dir:
    description:
      - With O(state=rebuild), the directory of C(pg_ctl), C(pg_rewind), C(pg_basebackup). Falls back to
        E(APEX_PG_BIN), then E(PATH).
    type: path
  os_user:
    description:
      - With O(state=rebuild), the operating-system user the server programs run as (the data directory's owner)
        when the module runs as root. Empty runs them as the module's user (use become).
    type: str
  keep_files:
    description:
      - With O(state=rebuild), files of the target's data directory kept across the rebuild (C(pg_rewind) and
        C(pg_basebackup) copy the source's, whose port and archive settings belong to the other server).
    type: list
    elements: str
    default: [postgresql.conf, pg_hba.conf, pg_ident.conf]
  log_file:
    description:
      - With O(state=rebuild), the server log for C(pg_ctl start -l). Default C(<data_dir>.log).
    type: path
  replication_user:
    description:
      - With O(state=rebuild), the replication role of the rebuilt standby's C(primary_conninfo) and of the base backup.
    type: str
    default: replicator
  replication_password:
    description:
      - The replication role's password. Falls back to E(APEX_PG_REPLICATION_PASSWORD).
    type: str
  timeout:
    description:
      - How long V(promote) waits for the promotion and a committed write, V(caught_up) for zero lag, and
        V(rebuild) for the rebuilt standby to stream.
    type: raw
    default: 60s
notes:
  - Supports check mode - V(promote) and V(fence) report what they would do; V(caught_up) reads once.
  - Diff mode shows the fence's and the promotion's before and after.
"""

EXAMPLES = r"""
- name: Replication facts of the standby
  apex.ops.apex_replica:
    login_host: db.secondary.example.com
  register: standby

- name: Fence the old primary
  apex.ops.apex_replica:
    state: fence
    login_host: db.primary.example.com

- name: Promote the standby (the primary is gone; data loss accepted)
  apex.ops.apex_replica:
    state: promote
    login_host: db.secondary.example.com
    allow_data_loss: true
"""

RETURN = r"""
replication:
  description:
    - The facts of the server (before the change for V(promote) and V(fence)) - C(role) primary or standby,
      C(timeline), C(in_recovery); a primary's C(current_lsn), C(read_only) and C(standbys) (application_name,
      state, sent_lsn, replay_lsn, lag_bytes, lag_seconds); a standby's C(receive_lsn), C(replay_lsn),
      C(receive_replay_lag_bytes), C(last_replayed_at), C(seconds_since_last_replay), C(streaming) and
      C(wal_receiver) (status, sender_host, sender_port, received_tli, flushed_lsn).
  returned: always
  type: dict
  sample: {role: standby, timeline: 1, streaming: true, replay_lsn: "0/3000148", receive_replay_lag_bytes: 0}
after:
  description: The facts after V(promote) (a primary on a new timeline).
  returned: state is promote and changed and not check mode
  type: dict
data_loss_window:
  description:
    - With V(promote) of a standby, what is kept - C(last_replayed_lsn), C(last_received_lsn),
      C(last_replayed_transaction_at), C(seconds_since_last_replay); anything the old primary committed after
      that is lost unless the standby was streaming with zero lag.
  returned: state is promote
  type: dict
read_only_default_cleared:
  description:
    - With V(promote), whether the promoted server carried C(default_transaction_read_only = on) (a fence's
      setting copied from the fenced primary by a clone or a rewind) and it was reset.
  returned: state is promote and the server was a standby
  type: bool
app_role_login_restored:
  description: With V(promote), whether O(app_role) could not log in (a replicated fence) and was allowed again.
  returned: state is promote and the server was a standby
  type: bool
timings:
  description: C(promote_seconds) (pg_promote returned) and C(writable_seconds) (a write committed).
  returned: state is promote and changed and not check mode
  type: dict
fence:
  description: C(before) and C(after) (app_role, app_role_can_login, read_only, app_sessions) and C(terminated) pids.
  returned: state is fence
  type: dict
rebuild:
  description:
    - With V(rebuild) - C(method) (pg_rewind or pg_basebackup), C(rewind_error) (why the rewind was not possible),
      C(diverged_copy) (the old directory kept aside after a base backup), C(stopped), C(kept_files),
      C(commands) (the programs run, as argument lists; no password is ever in them).
  returned: state is rebuild
  type: dict
standby:
  description: With V(caught_up) (or O(wait_caught_up)), the standby's C(pg_stat_replication) row last seen.
  returned: state is caught_up or wait_caught_up
  type: dict
refused:
  description: Why the module refused (nothing was changed).
  returned: failure
  type: str
"""

from ansible.module_utils.basic import env_fallback

from ansible_collections.apex.ops.plugins.module_utils import postgres
from ansible_collections.apex.ops.plugins.module_utils.apex_module import ApexModule
from ansible_collections.apex.ops.plugins.module_utils.common_args import POSTGRES_ARGSPEC
from ansible_collections.apex.ops.plugins.module_utils.durations import parse_duration

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="facts", choices=["facts", "promote", "fence", "caught_up", "rebuild"]),
    require_streaming=dict(type="bool", default=True),
    allow_data_loss=dict(type="bool", default=False),
    max_replay_lag_bytes=dict(type="int", default=16 * 1024 * 1024),
    app_role=dict(type="str", default="apex"),
    wait_caught_up=dict(type="bool", default=False),
    application_name=dict(type="str", default="apex-standby"),
    timeout=dict(type="raw", default="60s"),
    data_dir=dict(type="path"),
    confirm=dict(type="str", default=""),
    method=dict(type="str", default="auto", choices=["auto", "rewind", "basebackup"]),
    bin_dir=dict(type="path", fallback=(env_fallback, ["APEX_PG_BIN"])),
    os_user=dict(type="str"),
    keep_files=dict(type="list", elements="str", default=["postgresql.conf", "pg_hba.conf", "pg_ident.conf"]),
    log_file=dict(type="path"),
    replication_user=dict(type="str", default="replicator"),
    replication_password=dict(type="str", no_log=True, fallback=(env_fallback, ["APEX_PG_REPLICATION_PASSWORD"])),
)


def run(module, conn):
    from ansible_collections.apex.ops.plugins.module_utils import pg_replica

    p = module.params
    state = p["state"]
    timeout = parse_duration(p["timeout"], "timeout")
    facts = pg_replica.gather(conn)
    result = dict(changed=False, state=state, replication=facts)
    if state == "promote":
        if facts["in_recovery"]:
            result["data_loss_window"] = pg_replica.data_loss_window(facts)
        refusal = pg_replica.promotion_refusal(facts, p["require_streaming"], p["max_replay_lag_bytes"],
                                               p["allow_data_loss"])
        if refusal:
            raise pg_replica.ReplicaRefused(refusal, facts)
        if facts["in_recovery"]:
            result["changed"] = True
            if not module.check_mode:
                promoted, writable = pg_replica.promote(conn, timeout)
                result["timings"] = dict(promote_seconds=round(promoted, 3), writable_seconds=round(writable, 3))
                result["after"] = pg_replica.gather(conn)
            result["read_only_default_cleared"] = pg_replica.clear_read_only_default(conn, module.check_mode)
            if p["app_role"]:
                result["app_role_login_restored"] = pg_replica.allow_app_role(conn, p["app_role"], module.check_mode)
            if module._diff:
                result["diff"] = dict(before=dict(role="standby", timeline=facts["timeline"]),
                                      after=dict(role="primary"))
    elif state == "fence":
        before, after, terminated = pg_replica.fence(conn, p["app_role"], module.check_mode)
        result["changed"] = before != after or bool(terminated)
        result["fence"] = dict(before=before, after=after, terminated=[t["pid"] for t in terminated])
        if module._diff:
            result["diff"] = dict(before=before, after=after)
        if p["wait_caught_up"]:
            wait_standby(module, conn, facts, result)
    elif state == "caught_up":
        wait_standby(module, conn, facts, result)
    elif state == "rebuild":
        rebuild(module, conn, facts, result)
    return result


def rebuild(module, conn, facts, result):
    from ansible_collections.apex.ops.plugins.module_utils import pg_rebuild, pg_replica

    p = module.params
    if facts["in_recovery"]:
        raise pg_replica.ReplicaRefused("state=rebuild follows a primary; the server the connection names is a standby",
                                        facts)
    if p["confirm"] != p["data_dir"]:
        raise pg_replica.ReplicaRefused("state=rebuild discards what %s holds after the promotion: set confirm to "
                                        "the data directory to go ahead" % p["data_dir"], facts)
    result["changed"] = True
    if module.check_mode:
        result["rebuild"] = dict(method=None, planned="stop, %s, standby of %s:%s" % (
            "pg_rewind (pg_basebackup if impossible)" if p["method"] == "auto" else p["method"],
            p["login_host"], p["login_port"]))
        return
    source = dict(host=p["login_host"], port=p["login_port"], user=p["login_user"], dbname=p["login_db"],
                  sslmode=p["ssl_mode"], sslrootcert=p["ca_cert"])
    replication = dict(host=p["login_host"], port=p["login_port"], user=p["replication_user"],
                       sslmode=p["ssl_mode"], sslrootcert=p["ca_cert"], application_name=p["application_name"])
    builder = pg_rebuild.Rebuilder(p["data_dir"], p["bin_dir"], p["os_user"], p["log_file"])
    # pg_rewind compares the timelines in the control files: a just-promoted source still records
    # the old one until its first checkpoint, and pg_rewind would then find "no rewind required"
    # and leave the target on a timeline the source forked from (it then fails to start as a standby)
    with conn.cursor() as cur:
        cur.execute("CHECKPOINT")
    try:
        done = builder.rebuild(source, p["login_password"], replication, p["replication_password"],
                               method=p["method"], keep=p["keep_files"])
    except pg_rebuild.RebuildError as exc:
        module.fail(str(exc), last_state=dict(exc.last_state or {}, commands=builder.commands))
    done["commands"] = builder.commands
    result["rebuild"] = done
    wait_standby(module, conn, facts, result)


def wait_standby(module, conn, facts, result):
    from ansible_collections.apex.ops.plugins.module_utils import pg_replica

    timeout = parse_duration(module.params["timeout"], "timeout")
    name = module.params["application_name"]
    if facts["in_recovery"]:
        raise pg_replica.ReplicaRefused("waiting for a standby runs on the primary; this server is a standby", facts)
    waited = pg_replica.wait_caught_up(conn, name, 0 if module.check_mode else timeout)
    result["standby"] = waited.last
    if not waited and not module.check_mode:
        module.fail("standby %r has not replayed all WAL within %ss" % (name, timeout),
                    last_state=dict(standby=waited.last, primary=facts))


def main():
    module = ApexModule(ARGUMENT_SPEC, fragments=(POSTGRES_ARGSPEC,), requirements=(postgres.REQUIREMENT,),
                        supports_check_mode=True, required_if=[("state", "rebuild", ("data_dir",))])
    from ansible_collections.apex.ops.plugins.module_utils.pg_replica import ReplicaRefused

    p = module.params
    try:
        parse_duration(p["timeout"], "timeout")
        postgres.session_timeouts(p)
    except ValueError as exc:
        module.fail(str(exc))
    try:
        conn = postgres.connect(p)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail("cannot connect to PostgreSQL at %s:%s as %s" % (p["login_host"], p["login_port"], p["login_user"]),
                    exception=exc)
    try:
        result = run(module, conn)
    except ReplicaRefused as exc:
        module.fail(str(exc), refused=str(exc), last_state=exc.facts)
    finally:
        conn.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
