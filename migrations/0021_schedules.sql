-- Schedules (triggers.cron): one row per function and cron expression,
-- replaced at each deploy, gone with the function.
CREATE TABLE function_schedules (
    function    text NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    schedule    text NOT NULL,
    -- Whether the latest tick missed while no manager ran fires on recovery.
    catch_up    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function, schedule)
);

-- One row per tick fired: the primary key is what makes a tick fire once
-- however many managers see it due (INSERT ... ON CONFLICT DO NOTHING, in
-- the transaction that queues its event).
CREATE TABLE cron_ticks (
    function    text NOT NULL,
    schedule    text NOT NULL,
    tick        timestamptz NOT NULL,
    request_id  uuid NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function, schedule, tick)
);
