-- eventbus 0001: the transactional outbox and the inbox.
--
-- Applied by `eventbus migrate` inside one transaction with search_path set
-- to the configured schema (EVENT_BUS_DB_SCHEMA, default public), so every
-- name below is unqualified. Safe to run again: everything is IF NOT EXISTS
-- or OR REPLACE.

-- Kafka's murmur2 partitioner (see docs/wire-format.md), so a service
-- without the Rust library can compute the partition in its INSERT.
-- 32-bit multiplication modulo 2^32, done in 16-bit halves to stay in bigint.
CREATE OR REPLACE FUNCTION eventbus_mul32(a bigint, b bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ((a * (b & 65535)) + (((a * (b >> 16)) & 65535) << 16)) & 4294967295 $$;

CREATE OR REPLACE FUNCTION eventbus_murmur2(data bytea) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    m constant bigint := 1540483477;               -- 0x5bd1e995
    len constant int := length(data);
    h bigint := (2538058380 # len) & 4294967295;   -- seed 0x9747b28c
    k bigint;
    i int := 0;
BEGIN
    WHILE i + 4 <= len LOOP
        k := get_byte(data, i)::bigint
           | (get_byte(data, i + 1)::bigint << 8)
           | (get_byte(data, i + 2)::bigint << 16)
           | (get_byte(data, i + 3)::bigint << 24);
        k := eventbus_mul32(k, m);
        k := k # (k >> 24);
        k := eventbus_mul32(k, m);
        h := eventbus_mul32(h, m) # k;
        i := i + 4;
    END LOOP;
    IF len - i >= 3 THEN h := h # (get_byte(data, i + 2)::bigint << 16); END IF;
    IF len - i >= 2 THEN h := h # (get_byte(data, i + 1)::bigint << 8); END IF;
    IF len - i >= 1 THEN
        h := eventbus_mul32(h # get_byte(data, i)::bigint, m);
    END IF;
    h := h # (h >> 13);
    h := eventbus_mul32(h, m);
    RETURN h # (h >> 15);
END
$$;

-- The partition of a key among `partitions`, as the Rust library computes it.
CREATE OR REPLACE FUNCTION eventbus_partition(key text, partitions integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$ SELECT ((eventbus_murmur2(convert_to(key, 'UTF8')) & 2147483647) % partitions)::integer $$;

-- One row per event waiting to be published (or, with retention, published).
CREATE TABLE IF NOT EXISTS eventbus_outbox (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    version        integer     NOT NULL DEFAULT 1,
    key            text        NOT NULL,
    partition      integer     NOT NULL,
    occurred_at    timestamptz NOT NULL DEFAULT now(),
    source         text        NOT NULL DEFAULT '',
    correlation_id text,
    causation_id   text,
    traceparent    text,
    headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    data           json        NOT NULL,  -- json, not jsonb: the payload's text is kept as written
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,           -- set instead of deleting when retention is on
    CONSTRAINT eventbus_outbox_type_ok CHECK (event_type ~ '^[A-Za-z0-9_-]+\.[^[:space:]{}]+$'),
    CONSTRAINT eventbus_outbox_key_ok CHECK (key <> ''),
    CONSTRAINT eventbus_outbox_version_ok CHECK (version >= 0),
    CONSTRAINT eventbus_outbox_partition_ok CHECK (partition >= 0),
    CONSTRAINT eventbus_outbox_headers_ok CHECK (jsonb_typeof(headers) = 'object')
);

-- The relay's claim: the oldest unpublished rows of one partition.
CREATE INDEX IF NOT EXISTS eventbus_outbox_unpublished
    ON eventbus_outbox (partition, id) WHERE published_at IS NULL;
-- Retention cleanup and `outbox replay --since`.
CREATE INDEX IF NOT EXISTS eventbus_outbox_published
    ON eventbus_outbox (published_at) WHERE published_at IS NOT NULL;

-- A queue table: rows are inserted and deleted all day. Vacuum early and
-- often so dead tuples do not pile up in front of the claim index, and leave
-- room on each page for HOT updates of published_at.
ALTER TABLE eventbus_outbox SET (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);

-- Wake relays when rows commit (a hint: relays also poll).
CREATE OR REPLACE FUNCTION eventbus_outbox_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('eventbus_outbox.' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER eventbus_outbox_notify
    AFTER INSERT ON eventbus_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION eventbus_outbox_notify();

-- Events a consumer group has handled: the row commits in the same
-- transaction as the handler's writes, so a redelivered event is skipped.
CREATE TABLE IF NOT EXISTS eventbus_inbox (
    group_name  text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, event_id)
);

CREATE INDEX IF NOT EXISTS eventbus_inbox_handled_at ON eventbus_inbox (handled_at);

ALTER TABLE eventbus_inbox SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
