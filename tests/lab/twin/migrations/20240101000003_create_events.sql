-- Events: the audit trail of a task (queued, started, completed, failed, retried...).
CREATE TABLE IF NOT EXISTS events (
    id          BIGSERIAL PRIMARY KEY,
    task_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    data        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_task_id_idx ON events (task_id);
CREATE INDEX IF NOT EXISTS events_created_at_idx ON events (created_at);
