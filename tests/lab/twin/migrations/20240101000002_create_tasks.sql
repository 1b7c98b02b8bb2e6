-- Tasks: one row per submitted task; the Redis queue carries task_id only.
CREATE TABLE IF NOT EXISTS tasks (
    id             BIGSERIAL PRIMARY KEY,
    task_id        TEXT NOT NULL UNIQUE,
    agent_id       BIGINT REFERENCES agents (id) ON DELETE SET NULL,
    status         TEXT NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    payload        JSONB NOT NULL DEFAULT '{}'::jsonb,
    result         JSONB,
    error_message  TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    provider       TEXT,
    worker         TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at     TIMESTAMPTZ,
    completed_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS tasks_status_created_at_idx ON tasks (status, created_at);
CREATE INDEX IF NOT EXISTS tasks_created_at_idx ON tasks (created_at);
CREATE INDEX IF NOT EXISTS tasks_agent_id_idx ON tasks (agent_id);
