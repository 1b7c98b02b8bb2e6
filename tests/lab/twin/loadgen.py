"""``loadgen --rate R --duration S``: submit tasks to the twin over HTTPS at a steady rate.

Open-loop schedule: request *i* is due at ``start + i / R``; at most ``R * S`` requests are
sent, with at most ``--concurrency`` in flight (keep-alive HTTPS connections, one per
thread). A request that cannot start within 1 s of its due time is counted as ``skipped``
(the target is too slow) instead of piling up; the run always ends by ``S + --timeout``
seconds. Prints a JSON summary: sent, by status, by track (``X-Apex-Track``), latency
percentiles, achieved rate.
"""
import argparse
import http.client
import json
import os
import ssl
import threading
import time
from urllib.parse import urlsplit

from .common import env


def _percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    idx = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return round(values[idx] * 1000, 2)


def run(url, rate, duration, concurrency=8, cafile=None, insecure=False, payload=None, fail_ratio=0.0,
        timeout=5.0, path="/api/v1/tasks"):
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 443
    if insecure:
        ctx = ssl._create_unverified_context()  # noqa: S323 - explicit opt-in for lab debugging
    else:
        ctx = ssl.create_default_context(cafile=cafile)
    total = int(rate * duration)
    start = time.monotonic() + 0.05
    lock = threading.Lock()
    state = {"next": 0}
    stats = {"sent": 0, "skipped": 0, "errors": 0, "by_status": {}, "by_track": {}, "latencies": [],
             "error_samples": []}
    base = dict(payload or {"kind": "loadgen"})

    def worker():
        conn = None
        while True:
            with lock:
                i = state["next"]
                if i >= total:
                    break
                state["next"] += 1
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0:
                with lock:
                    stats["skipped"] += 1
                continue
            body = dict(base, seq=i)
            if fail_ratio and (i % max(1, int(round(1 / fail_ratio)))) == 0:
                body["fail"] = True
            data = json.dumps({"payload": body}).encode()
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                elapsed = time.perf_counter() - t0
                status, track = str(resp.status), resp.getheader("X-Apex-Track") or "none"
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                with lock:
                    stats["sent"] += 1
                    stats["by_status"][status] = stats["by_status"].get(status, 0) + 1
                    stats["by_track"][track] = stats["by_track"].get(track, 0) + 1
                    stats["latencies"].append(elapsed)
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                with lock:
                    stats["sent"] += 1
                    stats["errors"] += 1
                    if len(stats["error_samples"]) < 5:
                        stats["error_samples"].append("%s: %s" % (type(exc).__name__, exc))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for thread in threads:
        thread.start()
    hard_deadline = start + duration + timeout + 2
    for thread in threads:
        thread.join(max(0.0, hard_deadline - time.monotonic()))
    elapsed = time.monotonic() - start
    lat = stats.pop("latencies")
    ok = sum(n for s, n in stats["by_status"].items() if s.startswith("2"))
    stats.update(url=url, requested=total, rate=rate, duration=duration, elapsed_s=round(elapsed, 2),
                 achieved_rate=round(stats["sent"] / elapsed, 2) if elapsed > 0 else None, accepted=ok,
                 latency_ms={"p50": _percentile(lat, 0.5), "p95": _percentile(lat, 0.95),
                             "p99": _percentile(lat, 0.99), "max": _percentile(lat, 1.0)})
    return stats


def main(argv):
    parser = argparse.ArgumentParser(prog="twin loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--url", default=env("APEX_API_URL") or "https://localhost:%s" % env("APEX_TWIN_PORT", "8443"))
    parser.add_argument("--cafile", default=env("APEX_CA_FILE"))
    parser.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fail-ratio", type=float, default=0.0,
                        help="fraction of tasks submitted with payload fail=true")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout (s)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be > 0")
    if args.rate * args.duration > 1000000:
        parser.error("refusing more than 1,000,000 requests in one run")
    if args.cafile and not os.path.exists(args.cafile):
        parser.error("CA file %s does not exist" % args.cafile)
    summary = run(args.url, args.rate, args.duration, args.concurrency, args.cafile, args.insecure,
                  fail_ratio=args.fail_ratio, timeout=args.timeout)
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["errors"] == 0 else 1
