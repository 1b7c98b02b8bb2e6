"""``seed --size-mb N``: grow the Apex database to about N MB with realistic-looking history.

Rows are generated in Python and streamed with ``COPY ... FROM STDIN`` (text format) in
batches; after every batch ``pg_database_size()`` is measured and the next batch is sized from
the observed bytes-per-task, so the result lands close to the target without overshooting by
more than one batch. Seeded tasks are history (``completed`` ~93 %, ``failed`` ~7 %, created
over the last 30 days, task ids ``seed-<run>-<n>``); each has 3 events. Nothing is pushed
to Redis: the queue stays as it was. The command is additive: run it again with a bigger N
to grow further; a database already at or above N is left alone.
"""
import argparse
import json
import random
import string
import time

from .common import env, pg_connect

PROVIDERS = ("openai", "anthropic", "google")
MODELS = {"openai": "gpt-4o", "anthropic": "claude-3-5-sonnet", "google": "gemini-1.5-pro"}
WORDS = ("agent summarize the quarterly report and list open risks for the platform team "
         "draft reply customer ticket escalate classify sentiment extract entities translate "
         "review pull request generate tests plan migration compare vendors outline").split()
MB = 1024 * 1024


def _sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _ts(epoch):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "+00"


class Generator:
    """Pre-builds a pool of payload/result texts so per-row work is string joins only."""

    def __init__(self, agents, seed=None):
        rng = random.Random(seed)
        self.rng = rng
        self.agents = agents  # list of (id, provider)
        self.payloads = [json.dumps({"prompt": _sentence(rng, rng.randint(40, 90)),
                                     "priority": rng.choice(["low", "normal", "high"]),
                                     "max_tokens": rng.choice([256, 512, 1024, 2048])})
                         for _ in range(500)]
        self.results = [json.dumps({"output": _sentence(rng, rng.randint(20, 60)),
                                    "tokens": rng.randint(50, 2000)}) for _ in range(500)]
        self.errors = ["provider timeout after 30s", "rate limited by provider (429)",
                       "invalid tool call in agent plan", "context length exceeded"]
        self.run = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(6))

    def batch(self, start, count, now):
        """Return (tasks_text, events_text) COPY payloads for ``count`` tasks."""
        rng = self.rng
        tasks, events = [], []
        for n in range(start, start + count):
            task_id = "seed-%s-%d" % (self.run, n)
            agent_id, provider = rng.choice(self.agents)
            created = now - rng.random() * 30 * 86400
            started = created + rng.random() * 5
            done = started + rng.random() * 60
            failed = rng.random() < 0.07
            worker = "apex-worker-%d" % rng.randint(1, 5)
            if failed:
                err = rng.choice(self.errors)
                tasks.append("%s\t%d\tfailed\t%s\t\\N\t%s\t3\t%s\t%s\t%s\t%s\t%s\n" % (
                    task_id, agent_id, rng.choice(self.payloads), err, provider, worker,
                    _ts(created), _ts(started), _ts(done)))
                last = ("failed", '{"error": "%s", "attempt": 3}' % err)
            else:
                tasks.append("%s\t%d\tcompleted\t%s\t%s\t\\N\t1\t%s\t%s\t%s\t%s\t%s\n" % (
                    task_id, agent_id, rng.choice(self.payloads), rng.choice(self.results), provider,
                    worker, _ts(created), _ts(started), _ts(done)))
                last = ("completed", '{"worker": "%s", "duration_ms": %d}' % (worker, (done - started) * 1000))
            events.append("%s\tqueued\t{\"track\": \"stable\"}\t%s\n" % (task_id, _ts(created)))
            events.append("%s\tstarted\t{\"worker\": \"%s\", \"attempt\": 1}\t%s\n" % (task_id, worker, _ts(started)))
            events.append("%s\t%s\t%s\t%s\n" % (task_id, last[0], last[1], _ts(done)))
        return "".join(tasks), "".join(events)


def ensure_agents(conn, count=50):
    with conn.transaction():
        for i in range(1, count + 1):
            provider = PROVIDERS[i % len(PROVIDERS)]
            conn.execute("INSERT INTO agents (name, provider, model) VALUES (%s, %s, %s) "
                         "ON CONFLICT (name) DO NOTHING",
                         ("agent-%03d" % i, provider, MODELS[provider]))
    return conn.execute("SELECT id, provider FROM agents ORDER BY id").fetchall()


def db_size(conn):
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def seed(dsn, size_mb, batch_rows=20000, log=print, seed_value=None):
    started = time.monotonic()
    target = int(size_mb * MB)
    with pg_connect(dsn, "apex-seed") as conn:
        initial = db_size(conn)
        summary = {"target_mb": size_mb, "initial_mb": round(initial / MB, 1), "tasks": 0, "events": 0}
        if initial >= target:
            summary.update(final_mb=summary["initial_mb"], seconds=0.0, changed=False)
            return summary
        gen = Generator(ensure_agents(conn), seed_value)
        per_task = 2600.0  # bytes per task incl. its 3 events and indexes; refined as we go
        size, n = db_size(conn), 0
        while size < target:
            count = int(min(batch_rows, max(500, (target - size) / per_task)))
            tasks_text, events_text = gen.batch(n, count, time.time())
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy("COPY tasks (task_id, agent_id, status, payload, result, error_message, "
                                  "attempts, provider, worker, created_at, started_at, completed_at) "
                                  "FROM STDIN") as copy:
                        copy.write(tasks_text)
                    with cur.copy("COPY events (task_id, kind, data, created_at) FROM STDIN") as copy:
                        copy.write(events_text)
            n += count
            new_size = db_size(conn)
            if new_size > size:
                per_task = max(500.0, 0.5 * per_task + 0.5 * (new_size - size) / count)
            size = new_size
            log(json.dumps({"seeded_tasks": n, "size_mb": round(size / MB, 1),
                            "elapsed_s": round(time.monotonic() - started, 1)}))
        elapsed = time.monotonic() - started
        summary.update(tasks=n, events=3 * n, final_mb=round(size / MB, 1), seconds=round(elapsed, 1),
                       mb_per_second=round((size - initial) / MB / elapsed, 1) if elapsed else None,
                       changed=True)
        return summary


def main(argv):
    parser = argparse.ArgumentParser(prog="twin seed", description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, required=True, help="target database size in MB")
    parser.add_argument("--dsn", default=env("APEX_PG_DSN"))
    parser.add_argument("--batch-rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=None, help="random seed (reproducible rows)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("APEX_PG_DSN (or --dsn) is required")
    if args.size_mb <= 0:
        parser.error("--size-mb must be > 0")
    import sys
    progress = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    summary = seed(args.dsn, args.size_mb, args.batch_rows, progress, args.seed)
    print(json.dumps(summary))
    return 0
