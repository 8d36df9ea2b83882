-- Function names may hold '_' (OpenLambda names functions after their
-- folders, e.g. max_mem_alloc); still lowercase, starting and ending with a
-- letter or digit, at most 63 characters (FunctionName in src/manifest.rs).
ALTER TABLE functions DROP CONSTRAINT functions_name_check;
ALTER TABLE functions ADD CONSTRAINT functions_name_check
    CHECK (name ~ '^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$');
