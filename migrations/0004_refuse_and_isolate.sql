-- eventbus 0004: the outbox refuses at INSERT what SQL can check; dead
-- letters hold any bytes and say where they came from.
--
-- See docs/outbox.md ("What the outbox refuses") and docs/dead-letters.md.

-- What `eventbus migrate` recorded from its configuration: the partition
-- count (EVENT_BUS_PARTITIONS) and the event size limit
-- (EVENT_BUS_MAX_EVENT_BYTES). One row. NULL = not recorded (no range check;
-- eventbus_partition(key) then uses the default, 16).
CREATE TABLE IF NOT EXISTS eventbus_settings (
    id               boolean     PRIMARY KEY DEFAULT true CHECK (id),
    partitions       integer     CHECK (partitions > 0),
    max_event_bytes  integer     CHECK (max_event_bytes > 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO eventbus_settings DEFAULT VALUES ON CONFLICT DO NOTHING;

-- The partition of a key among the recorded number of partitions.
CREATE OR REPLACE FUNCTION eventbus_partition(key text) RETURNS integer
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$ SELECT eventbus_partition(key, coalesce((SELECT partitions FROM eventbus_settings), 16)) $$;

-- A row inserted without a partition gets the key's, among the recorded
-- partitions (the WHEN clause keeps the cost off rows that have one).
CREATE OR REPLACE FUNCTION eventbus_outbox_default_partition() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    NEW.partition := eventbus_partition(NEW.key);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER eventbus_outbox_default_partition
    BEFORE INSERT ON eventbus_outbox
    FOR EACH ROW WHEN (NEW.partition IS NULL)
    EXECUTE FUNCTION eventbus_outbox_default_partition();

-- Checks the rows of every INSERT statement, in one set-based query per
-- statement (a per-row trigger cost a third of the insert rate). Rows
-- already in the table, and the relay's updates, are not re-checked; the
-- relay isolates what it cannot publish. Each refusal is a check_violation
-- naming its rule as the constraint, with a message that says what is wrong
-- and how to fix it.
CREATE OR REPLACE FUNCTION eventbus_outbox_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    parts  integer;
    limit_ integer;
    bad    record;
BEGIN
    SELECT partitions, max_event_bytes INTO parts, limit_ FROM eventbus_settings;
    SELECT r.partition,
           json_typeof(r.data) AS data_type,
           h.key AS header, jsonb_typeof(h.value) AS header_type,
           octet_length(r.data::text) + octet_length(r.headers::text) + octet_length(r.event_type)
             + octet_length(r.key) + octet_length(r.source) + coalesce(octet_length(r.correlation_id), 0)
             + coalesce(octet_length(r.causation_id), 0) + coalesce(octet_length(r.traceparent), 0) + 120 AS size
      INTO bad
      FROM inserted r
      LEFT JOIN LATERAL (
          SELECT e.key, e.value FROM jsonb_each(CASE WHEN r.headers = '{}'::jsonb THEN NULL ELSE r.headers END) e
          WHERE jsonb_typeof(e.value) <> 'string' LIMIT 1) h ON true
     WHERE (parts IS NOT NULL AND r.partition >= parts)
        OR json_typeof(r.data) IS DISTINCT FROM 'object'
        OR h.key IS NOT NULL
        OR (limit_ IS NOT NULL AND octet_length(r.data::text) + octet_length(r.headers::text) + octet_length(r.event_type)
             + octet_length(r.key) + octet_length(r.source) + coalesce(octet_length(r.correlation_id), 0)
             + coalesce(octet_length(r.causation_id), 0) + coalesce(octet_length(r.traceparent), 0) + 120 > limit_)
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF parts IS NOT NULL AND bad.partition >= parts THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            CONSTRAINT = 'eventbus_outbox_partition_in_range',
            MESSAGE = format('eventbus_outbox: partition %s is out of range: this outbox has %s partitions (0 to %s, recorded by eventbus migrate from EVENT_BUS_PARTITIONS)',
                             bad.partition, parts, parts - 1),
            HINT = 'leave the partition column out (it defaults to eventbus_partition(key)) or use eventbus_partition(key)';
    END IF;
    IF bad.data_type IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            CONSTRAINT = 'eventbus_outbox_data_is_object',
            MESSAGE = format('eventbus_outbox: data must be a JSON object, not %s', coalesce(bad.data_type, 'NULL')),
            HINT = 'wrap the payload in an object, e.g. {"value": ...}';
    END IF;
    IF bad.header IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            CONSTRAINT = 'eventbus_outbox_headers_are_strings',
            MESSAGE = format('eventbus_outbox: header %s must be a string, not a %s', to_json(bad.header)::text, bad.header_type),
            HINT = 'headers is a JSON object of strings, e.g. {"attempt": "3"}';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'check_violation',
        CONSTRAINT = 'eventbus_outbox_size_within_limit',
        MESSAGE = format('eventbus_outbox: the event is %s bytes, over the limit of %s bytes (EVENT_BUS_MAX_EVENT_BYTES)', bad.size, limit_),
        HINT = 'store large payloads elsewhere and send a reference';
END
$$;

CREATE OR REPLACE TRIGGER eventbus_outbox_check
    AFTER INSERT ON eventbus_outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION eventbus_outbox_check();

-- Dead letters: the exact source bytes when the JSON form had to change
-- (U+0000, which jsonb and text refuse, is shown there as U+FFFD) or the
-- source was not an envelope; and where the dead letter came from.
ALTER TABLE eventbus_dead_letters ADD COLUMN IF NOT EXISTS raw_fields bytea;
ALTER TABLE eventbus_dead_letters ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT 'consumer';
ALTER TABLE eventbus_dead_letters DROP CONSTRAINT IF EXISTS eventbus_dead_letters_origin_check;
ALTER TABLE eventbus_dead_letters ADD CONSTRAINT eventbus_dead_letters_origin_check
    CHECK (origin IN ('consumer', 'outbox'));
