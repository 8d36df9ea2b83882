-- The exact packages a code version runs with (resolved at deploy time from
-- its requirements.txt, so calls never resolve again), as cache directory
-- names, e.g. six-1.16.0.
ALTER TABLE code_versions ADD COLUMN packages text[] NOT NULL DEFAULT '{}';
