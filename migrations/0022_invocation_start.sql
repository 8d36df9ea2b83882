-- How each call's container was had (issue 14): a running container of the
-- function, a paused one, a prewarmed generic one, a prewarmed one whose
-- runtime had imported the function's packages already, or a new one.
-- NULL for calls that got no container (throttled, unknown function) and
-- for records written before this column existed.
ALTER TABLE invocations
    ADD COLUMN start text
        CHECK (start IN ('running', 'paused', 'prewarmed', 'import-cache', 'new'));
