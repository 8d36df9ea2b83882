-- Async calls, schedules and destinations (issue 16).

-- Each record says what started the call and, for an async event, which
-- attempt it was: the attempts of one event share its request id, so the
-- key becomes (request_id, attempt). A synchronous call is attempt 1.
ALTER TABLE invocations
    ADD COLUMN trigger text NOT NULL DEFAULT 'http'
        CHECK (trigger IN ('http', 'async', 'cron', 'destination')),
    ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1);
ALTER TABLE invocations DROP CONSTRAINT invocations_pkey;
ALTER TABLE invocations ADD PRIMARY KEY (request_id, attempt);

-- A function's event settings from its ol.yaml (async, on_success,
-- on_failure; schedules in function_schedules). Goes with the function.
CREATE TABLE function_events (
    function     text PRIMARY KEY REFERENCES functions (name) ON DELETE CASCADE,
    concurrency  integer NOT NULL DEFAULT 10 CHECK (concurrency BETWEEN 1 AND 1000),
    retries      integer NOT NULL DEFAULT 2 CHECK (retries BETWEEN 0 AND 10),
    max_age_s    integer NOT NULL DEFAULT 21600 CHECK (max_age_s BETWEEN 1 AND 21600),
    on_success   text,
    on_failure   text
);
INSERT INTO function_events (function) SELECT name FROM functions;

-- The durable queue: one row per async event, claimed by any manager with
-- FOR UPDATE SKIP LOCKED under a lease that its owner renews while the
-- attempt runs. A row whose lease ran out (its manager died) is claimed
-- again as a new attempt; a succeeded row is never claimed again.
CREATE TABLE events (
    request_id   uuid PRIMARY KEY,
    function     text NOT NULL,
    trigger      text NOT NULL CHECK (trigger IN ('async', 'cron', 'destination')),
    payload      bytea NOT NULL,
    state        text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    -- Attempts begun so far; attempt_base is the count when the event was
    -- last (re-)driven, so retries count from there.
    attempts     integer NOT NULL DEFAULT 0,
    attempt_base integer NOT NULL DEFAULT 0,
    run_after    timestamptz NOT NULL DEFAULT now(),
    owner        uuid,
    lease_until  timestamptz,
    result       jsonb,
    error        jsonb,
    -- For a destination's event: the request id of the call it follows,
    -- and how many destinations deep it is (bounded, so a loop ends).
    origin       uuid,
    depth        integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_live ON events (function, run_after) WHERE state IN ('queued', 'running');
