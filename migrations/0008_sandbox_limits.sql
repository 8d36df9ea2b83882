-- Per-function sandbox limits from ol.yaml: the network its containers get
-- (the internet but nothing local, or none) and the size of its /tmp.
ALTER TABLE functions
    ADD COLUMN network text NOT NULL DEFAULT 'internet' CHECK (network IN ('internet', 'none')),
    ADD COLUMN tmp_mb integer NOT NULL DEFAULT 64 CHECK (tmp_mb BETWEEN 1 AND 10240);
