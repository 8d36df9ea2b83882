-- Scale-out limits per function: calls one container serves at once, and
-- containers (times concurrency) the function may use at once.
ALTER TABLE functions
    ADD COLUMN concurrency integer NOT NULL DEFAULT 1 CHECK (concurrency BETWEEN 1 AND 1000),
    ADD COLUMN max_concurrency integer NOT NULL DEFAULT 100 CHECK (max_concurrency BETWEEN 1 AND 10000);
