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

-- Checks every new outbox row (INSERT only: rows already there, and the
-- relay's updates, are not re-checked; the relay isolates what it cannot
-- publish). Each refusal is a check_violation naming its rule as the
-- constraint, with a message that says what is wrong and how to fix it.
-- A row without a partition gets eventbus_partition(key).
CREATE OR REPLACE FUNCTION eventbus_outbox_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    parts  integer;
    limit_ integer;
    bad    text;
    badty  text;
    size   bigint;
BEGIN
    SELECT partitions, max_event_bytes INTO parts, limit_ FROM eventbus_settings;
    IF NEW.partition IS NULL THEN
        NEW.partition := eventbus_partition(NEW.key, coalesce(parts, 16));
    END IF;
    IF parts IS NOT NULL AND NEW.partition >= parts THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            CONSTRAINT = 'eventbus_outbox_partition_in_range',
            MESSAGE = format('eventbus_outbox: partition %s is out of range: this outbox has %s partitions (0 to %s, recorded by eventbus migrate from EVENT_BUS_PARTITIONS)',
                             NEW.partition, parts, parts - 1),
            HINT = 'leave the partition column out (it defaults to eventbus_partition(key)) or use eventbus_partition(key)';
    END IF;
    IF json_typeof(NEW.data) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            CONSTRAINT = 'eventbus_outbox_data_is_object',
            MESSAGE = format('eventbus_outbox: data must be a JSON object, not %s', coalesce(json_typeof(NEW.data), 'NULL')),
            HINT = 'wrap the payload in an object, e.g. {"value": ...}';
    END IF;
    SELECT h.key, jsonb_typeof(h.value) INTO bad, badty
        FROM jsonb_each(NEW.headers) h WHERE jsonb_typeof(h.value) <> 'string' LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            CONSTRAINT = 'eventbus_outbox_headers_are_strings',
            MESSAGE = format('eventbus_outbox: header %s must be a string, not a %s', to_json(bad)::text, badty),
            HINT = 'headers is a JSON object of strings, e.g. {"attempt": "3"}';
    END IF;
    IF limit_ IS NOT NULL THEN
        -- The stream entry's size, as stored (the relay checks the exact encoding again).
        size := octet_length(NEW.data::text) + octet_length(NEW.headers::text) + octet_length(NEW.event_type)
              + octet_length(NEW.key) + octet_length(NEW.source) + coalesce(octet_length(NEW.correlation_id), 0)
              + coalesce(octet_length(NEW.causation_id), 0) + coalesce(octet_length(NEW.traceparent), 0) + 120;
        IF size > limit_ THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                CONSTRAINT = 'eventbus_outbox_size_within_limit',
                MESSAGE = format('eventbus_outbox: the event is %s bytes, over the limit of %s bytes (EVENT_BUS_MAX_EVENT_BYTES)', size, limit_),
                HINT = 'store large payloads elsewhere and send a reference';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER eventbus_outbox_check
    BEFORE INSERT ON eventbus_outbox
    FOR EACH ROW EXECUTE FUNCTION eventbus_outbox_check();

-- Dead letters: the exact source bytes when the JSON form had to change
-- (U+0000, which jsonb and text refuse, is shown there as U+FFFD) or the
-- source was not an envelope; and where the dead letter came from.
ALTER TABLE eventbus_dead_letters ADD COLUMN IF NOT EXISTS raw_fields bytea;
ALTER TABLE eventbus_dead_letters ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT 'consumer';
ALTER TABLE eventbus_dead_letters DROP CONSTRAINT IF EXISTS eventbus_dead_letters_origin_check;
ALTER TABLE eventbus_dead_letters ADD CONSTRAINT eventbus_dead_letters_origin_check
    CHECK (origin IN ('consumer', 'outbox'));
