# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook's alert responses, judged: what the diagnosis points at (the root-cause tables of
"Monitoring Alerts and Responses") and which of the operator's requested actions are safe.

Pure: the inputs are what the read-only modules returned (apex_info, apex_db_maint, apex_queue,
apex_circuit_breaker), the output is a plan the role hands to the changing modules as is -
``rollout_targets`` to apex_rollout, ``scale`` to apex_scale, ``server_settings`` to apex_db_maint.
A requested action that is unsafe is not planned; ``refused`` says why. Each guard is the one a
careful engineer applies by hand: settings that "lower" only lower and those that "raise" only
raise, within a ceiling; traffic is only forced onto a provider whose status page says it is
healthy and that is not the failing one; database pools never add up to more than the server
accepts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

ALERTS = ("task_failure", "high_latency", "db_connections", "circuit_breaker")

CONCURRENCY = "APEX__WORKER__CONCURRENCY"
FORCE_PROVIDER = "APEX__ROUTING__FORCE_PROVIDER"
POOL = "APEX__DATABASE__MAX_CONNECTIONS"
THRESHOLD = "APEX__CIRCUIT_BREAKER__FAILURE_THRESHOLD"

DEFAULT_LIMITS = dict(
    cpu_percent=85,             # API pod CPU (% of limit) that counts as "high CPU" (runbook: >85% critical)
    slow_statement_ms=500,      # mean execution time of a statement that counts as slow
    redis_latency_ms=10,        # Redis PING round trip that counts as slow
    connections_percent=80,     # the ApexDatabaseConnectionsHigh threshold
    app_share_percent=50,       # one application holding more than this share of the connections
    max_connections_ceiling=1000,
    failure_threshold_ceiling=50,
)

# The ApexHighTaskFailureRate root-cause table (runbook), evidence patterns checked in error texts.
RATE_LIMIT_RE = re.compile(r"rate.?limit|\b429\b|too many requests|quota", re.IGNORECASE)
AUTH_RE = re.compile(r"\b401\b|invalid.{0,12}(api.?)?key|unauthori[sz]ed|authentication failed|incorrect api key",
                     re.IGNORECASE)
DATABASE_RE = re.compile(r"too many (clients|connections)|could not connect|connection refused|"
                         r"server closed the connection|database .{0,40}(unavailable|down)|PoolTimeout",
                         re.IGNORECASE)
PROVIDER_ERROR_RE = re.compile(r"provider \S+ returned an error|\b50[0234]\b|service unavailable|overloaded",
                               re.IGNORECASE)


class Plan(object):
    """What a response will do: causes found, changes planned, notes, refusals."""

    def __init__(self, alert, deployments):
        self.alert = alert
        self.deployments = deployments
        self.causes, self.notes, self.refused = [], [], []
        self.env = {}           # deployment -> {NAME: value}
        self.changes = []       # {setting, deployment, before, after}
        self.scale = None
        self.server_settings = {}
        self.findings = {}

    def cause(self, cause, evidence, action):
        self.causes.append(dict(cause=cause, evidence=[e for e in evidence if e][:10], action=action))

    def set_env(self, component, name, before, after):
        deployment = self.deployments[component]
        self.env.setdefault(deployment, {})[name] = str(after)
        self.changes.append(dict(setting=name, deployment=deployment, before=before, after=after))

    def result(self):
        return dict(alert=self.alert, causes=self.causes, findings=self.findings, changes=self.changes,
                    rollout_targets=[dict(name=d, env=e) for d, e in sorted(self.env.items())],
                    scale=self.scale, server_settings=self.server_settings, notes=self.notes,
                    refused=self.refused)


# --------------------------------------------------------------------------- small pure helpers


def workload(info, name):
    """The deployment summary called ``name`` in an apex_info result, or ``None``."""
    for dep in (info or {}).get("deployments") or []:
        if dep.get("name") == name:
            return dep
    return None


def setting(dep, name, cast=int):
    """A setting of a deployment summary (``settings``), cast; ``None`` when unset or not castable."""
    value = ((dep or {}).get("settings") or {}).get(name)
    if value is None or value == "(valueFrom)":
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def lower_only(plan, label, current, requested, minimum=1):
    """``requested`` when it lowers ``current`` (and is >= ``minimum``), else ``None`` with a refusal or a note."""
    if requested < minimum:
        plan.refused.append("%s %s is below the minimum %s" % (label, requested, minimum))
        return None
    if current is not None and requested > current:
        plan.refused.append("%s %s would raise it (now %s): this response only lowers it" % (label, requested, current))
        return None
    if current == requested:
        plan.notes.append("%s is already %s" % (label, current))
        return None
    return requested


def raise_only(plan, label, current, requested, ceiling, ceiling_var):
    """``requested`` when it raises ``current`` up to ``ceiling``, else ``None`` with a refusal or a note."""
    if requested > ceiling:
        plan.refused.append("%s %s is above the ceiling %s (%s)" % (label, requested, ceiling, ceiling_var))
        return None
    if current is not None and requested < current:
        plan.refused.append("%s %s would lower it (now %s): this response only raises it" % (label, requested, current))
        return None
    if current == requested:
        plan.notes.append("%s is already %s" % (label, current))
        return None
    return requested


def choose_provider(plan, label, requested, current, providers, avoid):
    """``requested`` when routing may be forced onto it: checked, healthy, not a failing provider."""
    if requested == current:
        plan.notes.append("%s: routing is already forced to %s" % (label, current))
        return None
    if requested in avoid:
        plan.refused.append("%s %s is the provider that is failing" % (label, requested))
        return None
    status = (providers or {}).get(requested)
    if status is None:
        plan.refused.append("%s %s: its status page was not checked (add it to the providers)" % (label, requested))
        return None
    if status.get("healthy") is not True:
        why = status.get("error") or "%s: %s" % (status.get("indicator"), status.get("description"))
        plan.refused.append("%s %s is not confirmed healthy (%s)" % (label, requested, why))
        return None
    return requested


def unhealthy_providers(providers):
    return sorted(p for p, s in (providers or {}).items() if s.get("healthy") is False)


def describe_provider(name, status):
    return "%s status page: %s (%s)" % (name, status.get("indicator"), status.get("description"))


def matching(texts, regex):
    return [t for t in texts if t and regex.search(t)]


def log_lines(logs):
    return [line for entry in logs or [] for line in entry.get("lines") or []]


# --------------------------------------------------------------------------- the four alerts


def plan_task_failure(plan, diag, requested, limits):
    failed = diag.get("failed_tasks") or []
    providers = diag.get("providers") or {}
    texts = [r.get("error_message") for r in failed] + log_lines(diag.get("logs"))
    by_provider = {}
    for row in failed:
        key = row.get("provider") or "(none)"
        by_provider[key] = by_provider.get(key, 0) + 1
    plan.findings.update(failed_tasks=len(failed), failed_by_provider=by_provider,
                         error_lines=len(log_lines(diag.get("logs"))),
                         unhealthy_providers=unhealthy_providers(providers))

    down = unhealthy_providers(providers)
    failing = sorted(set(down) | set(p for p in by_provider if p in down))
    if down:
        plan.cause("LLM provider outage", [describe_provider(p, providers[p]) for p in down]
                   + ["%d failed task(s) on %s" % (by_provider[p], p) for p in down if p in by_provider],
                   "Enable the fallback provider, notify stakeholders")
    if matching(texts, RATE_LIMIT_RE):
        plan.cause("Rate limiting from LLM", matching(texts, RATE_LIMIT_RE),
                   "Reduce worker concurrency, check API quotas")
    if matching(texts, AUTH_RE):
        plan.cause("Invalid API keys", matching(texts, AUTH_RE), "Rotate keys, update secrets")
    db_evidence = matching(texts, DATABASE_RE)
    conns = ((diag.get("database") or {}).get("connections") or {})
    if conns.get("percent") is not None and conns["percent"] > limits["connections_percent"]:
        db_evidence.append("connections at %s%% of max_connections" % conns["percent"])
    if db_evidence:
        plan.cause("Database connection issues", db_evidence, "Check PostgreSQL health, connection pool")
    crashed = [p for p in (diag.get("worker") or {}).get("pods") or []
               if p.get("restarts") or p.get("last_termination_reason") or not p.get("ready", True)]
    if crashed:
        plan.cause("Worker crashes", ["%s: restarts %s, last termination %s, ready %s"
                                      % (p.get("name"), p.get("restarts"), p.get("last_termination_reason"),
                                         p.get("ready")) for p in crashed],
                   "Check worker logs, resource limits")
    provider_errors = matching(texts, PROVIDER_ERROR_RE)
    if provider_errors and not down:
        plan.cause("LLM provider errors while its status page is healthy", provider_errors,
                   "Check the provider's API responses and quotas; a fallback provider if it persists")

    worker = workload(diag.get("worker"), plan.deployments["worker"])
    if requested.get("worker_concurrency") is not None:
        current = setting(worker, CONCURRENCY)
        new = lower_only(plan, "worker concurrency", current, int(requested["worker_concurrency"]))
        if new is not None:
            plan.set_env("worker", CONCURRENCY, current, new)
    if requested.get("fallback_provider"):
        current = setting(worker, FORCE_PROVIDER, str)
        avoid = set(failing) | set(p for p, n in by_provider.items() if n and p not in providers)
        new = choose_provider(plan, "fallback provider", requested["fallback_provider"], current, providers, avoid)
        if new is not None:
            plan.set_env("worker", FORCE_PROVIDER, current, new)


def plan_high_latency(plan, diag, requested, limits):
    api_info = diag.get("api") or {}
    api = workload(api_info, plan.deployments["api"])
    worker = workload(diag.get("worker"), plan.deployments["worker"])
    db = diag.get("database") or {}
    statements = db.get("statements") or {}
    redis = diag.get("redis_latency") or {}
    pods = ((api_info.get("metrics") or {}).get("pods")) or []
    hot = [p for p in pods if (p.get("cpu_percent_of_limit") or 0) > limits["cpu_percent"]]
    slow = [s for s in statements.get("top") or [] if (s.get("mean_exec_time_ms") or 0) > limits["slow_statement_ms"]]
    long_running = db.get("long_running") or []
    plan.findings.update(
        api_replicas=(api or {}).get("desired"), api_pool=setting(api, POOL),
        statements_available=bool(statements.get("available")),
        redis_latency_avg_ms=redis.get("avg_ms"),
        connections_percent=(db.get("connections") or {}).get("percent"))
    if not statements.get("available"):
        plan.notes.append(statements.get("how_to_enable") or "pg_stat_statements is not available")
    if hot:
        plan.cause("High CPU utilization", ["%s: CPU %s%% of its limit" % (p["name"], p["cpu_percent_of_limit"])
                                            for p in hot],
                   "Scale up pods, check for resource-intensive tasks")
    if slow or long_running:
        plan.cause("Slow database queries",
                   ["mean %s ms, %s calls: %s" % (s.get("mean_exec_time_ms"), s.get("calls"), s.get("query"))
                    for s in slow]
                   + ["pid %s (%s) running %ss: %s"
                      % (r.get("pid"), r.get("application_name"), r.get("query_seconds"), r.get("query"))
                      for r in long_running],
                   "Analyze and optimize queries, add indexes; a larger pool only if the pool is the bottleneck")
    if redis.get("avg_ms") is not None and redis["avg_ms"] > limits["redis_latency_ms"]:
        plan.cause("Redis latency", ["PING average %s ms over %s samples (max %s ms)"
                                     % (redis["avg_ms"], redis.get("samples"), redis.get("max_ms"))],
                   "Check Redis memory, consider Redis cluster")

    replicas = (api or {}).get("desired")
    target_replicas = replicas
    if requested.get("api_replicas") is not None:
        want = int(requested["api_replicas"])
        if replicas is not None and want < replicas:
            plan.refused.append("API replicas %s is below the current %s: this response only scales up" % (want, replicas))
        elif want == replicas:
            plan.notes.append("API replicas already %s" % replicas)
        else:
            plan.scale = dict(name=plan.deployments["api"], replicas=want, current_replicas=replicas)
            target_replicas = want
    if requested.get("api_max_connections") is not None:
        current = setting(api, POOL)
        conns = db.get("connections") or {}
        budget = (conns.get("max_connections") or 0) - (conns.get("superuser_reserved_connections") or 0)
        want = int(requested["api_max_connections"])
        worker_total = ((worker or {}).get("desired") or 0) * (setting(worker, POOL) or 0)
        needed = (target_replicas or 0) * want + worker_total
        if not budget:
            plan.refused.append("API pool %s: the server's max_connections is unknown, so the pools cannot be checked "
                                "against it" % want)
        elif needed > budget:
            plan.refused.append(
                "API pool %s: %s API replicas x %s + worker pools %s = %s connections, more than the %s the server "
                "accepts (max_connections %s - %s reserved); raise max_connections first (alert_db_connections)"
                % (want, target_replicas, want, worker_total, needed, budget, conns.get("max_connections"),
                   conns.get("superuser_reserved_connections")))
        else:
            new = raise_only(plan, "API pool size", current, want, budget, "the server's max_connections")
            if new is not None:
                plan.set_env("api", POOL, current, new)


def plan_db_connections(plan, diag, requested, limits):
    db = diag.get("database") or {}
    conns = db.get("connections") or {}
    total = conns.get("total") or 0
    by_app = conns.get("by_application") or {}
    idle_tx = db.get("idle_in_transaction") or []
    idle = db.get("idle") or []
    plan.findings.update(total=total, max_connections=conns.get("max_connections"), percent=conns.get("percent"),
                         by_application=by_app, by_state=conns.get("by_state") or {},
                         idle_longer=len(idle), idle_in_transaction=len(idle_tx))
    if conns.get("percent") is not None and conns["percent"] > limits["connections_percent"]:
        plan.cause("Connections above %s%% of max_connections" % limits["connections_percent"],
                   ["%s of %s connections (%s%%)" % (total, conns.get("max_connections"), conns["percent"])],
                   "Terminate idle sessions, lower the pools; raise max_connections (restart) only if the pools need it")
    if idle_tx:
        plan.cause("Sessions idle in transaction",
                   ["pid %s (%s) idle in transaction %ss: %s"
                    % (r.get("pid"), r.get("application_name"), r.get("state_seconds"), r.get("query"))
                    for r in idle_tx],
                   "An application leaves transactions open (they hold locks and snapshots): fix the code path; "
                   "terminate them")
    if idle:
        plan.cause("Idle connections", ["%d session(s) idle longer than the limit, e.g. pid %s (%s)"
                                        % (len(idle), idle[0].get("pid"), idle[0].get("application_name"))],
                   "Terminate idle sessions; pools larger than needed: lower APEX__DATABASE__MAX_CONNECTIONS")
    for app, count in sorted(by_app.items(), key=lambda kv: -kv[1]):
        if total and 100.0 * count / total > limits["app_share_percent"]:
            plan.cause("One application holds most connections", ["%s: %s of %s" % (app, count, total)],
                       "Lower that application's pool (APEX__DATABASE__MAX_CONNECTIONS) or look for a leak")
            break

    for component, size in sorted((requested.get("pool_sizes") or {}).items()):
        if component not in plan.deployments:
            plan.refused.append("pool size of %s: unknown component (one of %s)"
                                % (component, ", ".join(sorted(plan.deployments))))
            continue
        dep = workload(diag.get(component), plan.deployments[component])
        current = setting(dep, POOL)
        new = lower_only(plan, "%s pool size" % component, current, int(size))
        if new is not None:
            plan.set_env(component, POOL, current, new)
    if requested.get("max_connections") is not None:
        current = conns.get("max_connections")
        new = raise_only(plan, "max_connections", current, int(requested["max_connections"]),
                         limits["max_connections_ceiling"], "max_connections_ceiling")
        if new is not None:
            plan.server_settings["max_connections"] = new
            plan.changes.append(dict(setting="max_connections", deployment=None, before=current, after=new))


def plan_circuit_breaker(plan, diag, requested, limits):
    breaker = diag.get("breaker") or {}
    state = breaker.get("circuit_breaker") or {}
    providers = breaker.get("providers") or {}
    provider = state.get("provider")
    api = workload(diag.get("api"), plan.deployments["api"])
    worker = workload(diag.get("worker"), plan.deployments["worker"])
    lines = log_lines(diag.get("logs"))
    plan.findings.update(state=state.get("state"), provider=provider, failures=state.get("failures"),
                         opened_at=state.get("opened_at"), force_provider=breaker.get("force_provider"),
                         failure_threshold=setting(api, THRESHOLD), breaker_log_lines=len(lines))
    status = providers.get(provider) if provider else None
    if state.get("state") == "open":
        if status and status.get("healthy") is False:
            plan.cause("LLM provider outage", [describe_provider(provider, status)],
                       "Keep the breaker open; switch to the alternate provider")
        elif status and status.get("healthy"):
            plan.cause("Provider %s recovered (or a false positive)" % provider, [describe_provider(provider, status)]
                       + lines[-5:],
                       "Reset the breaker; if it opens again while the provider is healthy, raise the threshold")
        else:
            plan.cause("Breaker open, provider status unknown",
                       ["provider %s: %s" % (provider, (status or {}).get("error") or "not checked")] + lines[-5:],
                       "Check the provider's status page by hand before a reset")

    if requested.get("switch_provider"):
        current = setting(worker, FORCE_PROVIDER, str)
        new = choose_provider(plan, "alternate provider", requested["switch_provider"], current, providers,
                              set([provider]) if provider else set())
        if new is not None:
            plan.set_env("worker", FORCE_PROVIDER, current, new)
    if requested.get("failure_threshold") is not None:
        current = setting(api, THRESHOLD)
        new = raise_only(plan, "failure threshold", current, int(requested["failure_threshold"]),
                         limits["failure_threshold_ceiling"], "failure_threshold_ceiling")
        if new is not None:
            plan.set_env("api", THRESHOLD, current, new)


PLANNERS = dict(task_failure=plan_task_failure, high_latency=plan_high_latency,
                db_connections=plan_db_connections, circuit_breaker=plan_circuit_breaker)


def plan_response(alert, diagnosis, requested=None, limits=None, deployments=None):
    """The judged diagnosis and the plan of ``alert`` (see the module docstring)."""
    if alert not in PLANNERS:
        raise ValueError("alert must be one of %s" % ", ".join(ALERTS))
    merged = dict(DEFAULT_LIMITS)
    merged.update(dict((k, v) for k, v in (limits or {}).items() if v is not None))
    deps = dict(api="apex-api", worker="apex-worker")
    deps.update(deployments or {})
    plan = Plan(alert, deps)
    PLANNERS[alert](plan, diagnosis or {}, dict((k, v) for k, v in (requested or {}).items()
                                                if v is not None and v != "" and v != {}), merged)
    return plan.result()
