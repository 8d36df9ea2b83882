-- Credentials and the audit trail (issue 11). Only hashes of keys and
-- session ids are stored: a copy of the database hands out no credential.

-- Management API keys. Revoking deletes the row (and, by cascade, the
-- dashboard sessions opened with it), so a revoked key fails at once.
CREATE TABLE api_keys (
    name        text PRIMARY KEY,
    hash        text NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    -- deploy scope only: the function names the key may change start with this
    prefix      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Dashboard sessions: a random id given for a key at login.
CREATE TABLE sessions (
    hash        text PRIMARY KEY,
    key_name    text NOT NULL REFERENCES api_keys (name) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Invoke keys of `auth: key` functions; several at once, for rotation.
CREATE TABLE invoke_keys (
    id          uuid PRIMARY KEY,
    function    text NOT NULL,
    hash        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoke_keys_function ON invoke_keys (function);

-- How a function's URL is reached: `auth` and `rate_limit` of its ol.yaml
-- (or PATCH). Its own table, so that the functions table stays as it is.
CREATE TABLE function_access (
    function     text PRIMARY KEY,
    auth         text NOT NULL DEFAULT 'none' CHECK (auth IN ('none', 'key')),
    rate_per_s   double precision,
    rate_burst   integer
);

-- Every management change: who (key name), from where, what.
CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    source    text NOT NULL,
    action    text NOT NULL,
    function  text,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_function ON audit_log (function, at DESC);
