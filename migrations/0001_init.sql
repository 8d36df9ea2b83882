-- Code versions: the uploaded zips, content-addressed, so any manager node
-- sharing this database can fetch and unpack a version it has not seen.
CREATE TABLE code_versions (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    zip         bytea NOT NULL,
    size_bytes  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Functions: the current configuration of each deployed name.
CREATE TABLE functions (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    version       text NOT NULL REFERENCES code_versions (sha256),
    runtime       text NOT NULL,
    handler       text NOT NULL,
    memory_mb     integer NOT NULL CHECK (memory_mb > 0),
    timeout_ms    bigint NOT NULL CHECK (timeout_ms > 0),
    environment   jsonb NOT NULL DEFAULT '{}',
    http_methods  text[],
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per call. Not tied to functions by a foreign key: a deleted
-- function's records stay, for billing.
CREATE TABLE invocations (
    request_id   uuid PRIMARY KEY,
    function     text NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  bigint NOT NULL,
    billed_ms    bigint NOT NULL,
    memory_mb    integer NOT NULL,
    init_ms      bigint,
    cold         boolean NOT NULL,
    status       text NOT NULL,
    http_status  integer NOT NULL,
    billed       boolean NOT NULL DEFAULT true
);

CREATE INDEX invocations_function_started ON invocations (function, started_at DESC);
CREATE INDEX invocations_started ON invocations (started_at);
