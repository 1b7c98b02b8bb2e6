# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The region failover's gates and plan, and its timings: pure functions over what the role
gathered (apex_info of both clusters, apex_replica facts of both databases), unit-tested.

``plan_failover`` never raises for a failed gate: it lists every refusal, so the operator
sees all that is wrong at once (the role fails with them before anything changes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

CONFIRM_FAILOVER = "failover-to-secondary"
CONFIRM_FAILBACK = "failback-to-primary"
DEPLOYMENTS = ("apex-api", "apex-worker")


def _failed(result, key):
    """A result that failed (the role gathers with failed_when false), was skipped, or lacks ``key``."""
    return (not isinstance(result, dict) or bool(result.get("failed")) or bool(result.get("skipped"))
            or key not in result)


def _error(result):
    if not isinstance(result, dict):
        return "not gathered"
    return result.get("msg") or "failed"


def _by_name(items):
    return dict((i.get("name"), i) for i in items or [])


def cluster_gate(info, label, deployments=DEPLOYMENTS):
    """``(ok, detail)``: the cluster answered, has a Ready schedulable node, and has both Deployments."""
    if _failed(info, "nodes"):
        return False, "the %s cluster cannot be read: %s" % (label, _error(info))
    nodes = [n for n in info.get("nodes") or [] if n.get("ready") and not n.get("cordoned")]
    if not nodes:
        return False, "the %s cluster has no Ready, schedulable node" % label
    missing = [d for d in deployments if d not in _by_name(info.get("deployments"))]
    if missing:
        return False, "the %s cluster lacks Deployment(s) %s" % (label, ", ".join(missing))
    return True, "%d Ready schedulable node(s), %s present" % (len(nodes), " and ".join(deployments))


def scale_targets(primary_info, secondary_info, given, deployments=DEPLOYMENTS):
    """Replicas for the secondary's Deployments: ``given`` (a dict, values may be None) first, else
    what the primary's Deployments ran (recorded before the failover), else the secondary HPA's
    minimum, else 1. Returns ``{name: {"replicas": n, "source": ...}}``."""
    primary = {} if _failed(primary_info, "deployments") else _by_name(primary_info.get("deployments"))
    hpas = {} if _failed(secondary_info, "hpas") else _by_name(secondary_info.get("hpas"))
    out = {}
    for name in deployments:
        if (given or {}).get(name) is not None:
            out[name] = dict(replicas=int(given[name]), source="given")
        elif name in primary and primary[name].get("desired"):
            out[name] = dict(replicas=int(primary[name]["desired"]), source="recorded on the primary cluster")
        elif name in hpas and hpas[name].get("min_replicas"):
            out[name] = dict(replicas=int(hpas[name]["min_replicas"]), source="the secondary HPA's minimum")
        else:
            out[name] = dict(replicas=1, source="default")
    return out


def _standby_row(primary_facts, application_name):
    rows = [r for r in (primary_facts.get("replication") or {}).get("standbys") or []
            if r.get("application_name") == application_name]
    return rows[0] if rows else None


def plan_failover(secondary_info, standby_facts, primary_facts, primary_info, options):
    """Gates and plan of a failover to the secondary region.

    ``options``: ``max_lag_bytes``, ``application_name`` (the standby in pg_stat_replication),
    ``deployments`` (names, default apex-api and apex-worker), ``replicas`` (given counts by
    Deployment), ``confirm``, ``check_mode``.
    Returns ``dict(mode, gates, refusals, steps, scale, data_loss_window, needs_confirmation)``;
    ``mode`` is ``planned`` (the primary answers: fenced, zero lag, no data loss) or ``unplanned``.
    """
    gates, refusals = [], []

    def gate(name, ok, detail):
        gates.append(dict(name=name, ok=bool(ok), detail=detail))
        if not ok:
            refusals.append(detail)

    deployments = tuple(options.get("deployments") or DEPLOYMENTS)
    gate("secondary cluster", *cluster_gate(secondary_info, "secondary", deployments))
    standby = None if _failed(standby_facts, "replication") else standby_facts.get("replication") or {}
    if standby is None:
        gate("standby database", False, "the standby database cannot be reached: %s" % _error(standby_facts))
    elif not standby.get("in_recovery"):
        gate("standby database", False, "the standby database is not in recovery: it is already a primary "
                                        "(a failover ran already?); nothing to promote")
    else:
        gate("standby database", True, "in recovery on timeline %s, replayed up to %s"
             % (standby.get("timeline"), standby.get("replay_lsn")))
    primary_up = not _failed(primary_facts, "replication")
    mode = "planned" if primary_up else "unplanned"
    data_loss = None
    if primary_up:
        primary = primary_facts.get("replication") or {}
        row = _standby_row(primary_facts, options.get("application_name", "apex-standby"))
        if primary.get("in_recovery"):
            gate("primary database", False, "the primary database is in recovery (a standby); the regions are "
                                            "not in the layout a failover starts from")
        elif row is None or row.get("state") != "streaming":
            gate("replication", False, "the primary answers but the standby %r is not streaming from it (%s); "
                                       "fix replication, or stop the primary to fail over without it"
                 % (options.get("application_name", "apex-standby"), row.get("state") if row else "not connected"))
        elif row.get("lag_bytes", 0) > options.get("max_lag_bytes", 0):
            gate("replication", False, "the standby lags %d bytes behind the primary (bound %d)"
                 % (row["lag_bytes"], options.get("max_lag_bytes", 0)))
        else:
            detail = ("streaming, %d bytes behind (bound %d); the primary is fenced first, then the standby "
                      "catches up to zero lag" % (row.get("lag_bytes", 0), options.get("max_lag_bytes", 0)))
            gate("replication", True, detail)
    else:
        gate("primary database", True, "unreachable (%s): unplanned failover, data written after the standby's "
                                       "last replayed transaction is lost" % _error(primary_facts))
        if standby:
            data_loss = dict(last_replayed_lsn=standby.get("replay_lsn"),
                             last_received_lsn=standby.get("receive_lsn"),
                             last_replayed_transaction_at=standby.get("last_replayed_at"),
                             seconds_since_last_replay=standby.get("seconds_since_last_replay"))
    confirmed = options.get("confirm") == CONFIRM_FAILOVER
    if not confirmed and not options.get("check_mode"):
        refusals.append("confirmation missing: set region_failover_confirm=%s to fail over (%s)"
                        % (CONFIRM_FAILOVER, "the primary is unreachable: data after the standby's last replayed "
                                             "transaction is lost" if not primary_up else "planned"))
    steps = (["fence the primary", "wait for zero lag"] if primary_up else []) + [
        "promote the standby", "point the public name at the secondary", "scale the secondary",
        "verify through the public name"]
    scale = scale_targets(primary_info, secondary_info, options.get("replicas"), deployments)
    return dict(mode=mode, gates=gates, refusals=refusals, steps=steps, data_loss_window=data_loss, scale=scale,
                scale_targets=[dict(name=n, replicas=scale[n]["replicas"]) for n in deployments],
                needs_confirmation=not confirmed)


def timings(stamps, order):
    """Seconds between consecutive ISO timestamps ``stamps[name]`` in ``order`` (missing ones are
    skipped), and the total from the first to the last. Pure."""
    from ansible_collections.apex.ops.plugins.module_utils.timestamps import parse_time
    points = [(name, parse_time(stamps.get(name))) for name in order if stamps.get(name)]
    points = [(n, t) for n, t in points if t is not None]
    steps = {}
    for before, after in zip(points, points[1:]):
        steps[after[0]] = round((after[1] - before[1]).total_seconds(), 3)
    total = round((points[-1][1] - points[0][1]).total_seconds(), 3) if len(points) > 1 else 0.0
    return dict(steps=steps, total_seconds=total)


def plan_failback(secondary_db, primary_db, dns, primary_info, options):
    """Gates and plan of the failback to the primary region (after a failover).

    ``secondary_db``: apex_replica facts of the secondary region's database (must be the primary
    now); ``primary_db``: of the old primary (may be unreachable: it is rebuilt anyway);
    ``dns``: apex_dns facts of the public name (must point at the secondary);
    ``primary_info``: apex_info of the primary cluster (must be usable, it takes the traffic back).
    ``options``: ``secondary_name`` (fqdn), ``deployments``, ``confirm``, ``check_mode``,
    ``secondary_info`` (apex_info of the secondary cluster: its counts go back to the primary).
    """
    gates, refusals = [], []

    def gate(name, ok, detail):
        gates.append(dict(name=name, ok=bool(ok), detail=detail))
        if not ok:
            refusals.append(detail)

    current = None if _failed(secondary_db, "replication") else secondary_db["replication"]
    if current is None:
        gate("secondary database", False, "the secondary region's database cannot be reached: %s" % _error(secondary_db))
    elif current.get("in_recovery"):
        gate("secondary database", False, "the secondary region's database is a standby: there is nothing to fail "
                                          "back from (the layout is the original one)")
    else:
        gate("secondary database", True, "primary on timeline %s" % current.get("timeline"))
    deployments = tuple(options.get("deployments") or DEPLOYMENTS)
    gate("primary cluster", *cluster_gate(primary_info, "primary", deployments))
    target = ((dns or {}).get("resolves_to") or {}).get("chain", [None])[-1]
    gate("public name", target == options.get("secondary_name"),
         "the public name resolves to %s (expected %s)" % (target, options.get("secondary_name")))
    old = None if _failed(primary_db, "replication") else primary_db["replication"]
    gate("old primary", True, "unreachable: it is rebuilt from the secondary (pg_rewind, else a base backup)"
         if old is None else "reachable (%s, timeline %s): it is rebuilt as a standby of the secondary"
         % (old.get("role"), old.get("timeline")))
    confirmed = options.get("confirm") == CONFIRM_FAILBACK
    if not confirmed and not options.get("check_mode"):
        refusals.append("confirmation missing: set region_failback_confirm=%s to fail back (the old primary's "
                        "data directory is rebuilt: what it holds after the promotion is discarded)"
                        % CONFIRM_FAILBACK)
    running = {} if _failed(options.get("secondary_info"), "deployments") else \
        _by_name(options["secondary_info"]["deployments"])
    here = {} if _failed(primary_info, "deployments") else _by_name(primary_info["deployments"])
    scale = [dict(name=n, replicas=int((running.get(n) or {}).get("desired") or (here.get(n) or {}).get("desired") or 1))
             for n in deployments]
    steps = ["rebuild the old primary as a standby of the secondary", "fence the secondary and wait for zero lag",
             "promote the old primary", "point the public name at the primary",
             "scale the primary, then the secondary to 0", "verify through the public name",
             "rebuild the secondary as a standby of the primary"]
    return dict(gates=gates, refusals=refusals, needs_confirmation=not confirmed, scale_targets=scale,
                scale_down=[dict(name=n, replicas=0) for n in deployments], steps=steps)
