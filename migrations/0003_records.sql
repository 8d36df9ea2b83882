-- Fuller per-call records: peak memory, time queued, and the handler's
-- output (kept for OL_LOG_RETENTION_DAYS, then cleared; the record stays).
ALTER TABLE invocations
    ADD COLUMN max_memory_used_mb integer,
    ADD COLUMN wait_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN logs text;

CREATE INDEX invocations_function_logs ON invocations (function, started_at DESC)
    WHERE logs IS NOT NULL;
