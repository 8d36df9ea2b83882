-- Every version a function has run, for the dashboard's history.
CREATE TABLE function_versions (
    function     text NOT NULL,
    version      text NOT NULL REFERENCES code_versions (sha256),
    deployed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function, deployed_at, version)
);
