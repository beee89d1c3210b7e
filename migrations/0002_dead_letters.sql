-- eventbus 0002: dead letters and their audit trail.
--
-- One row per (group, event): an event a group failed to handle after its
-- attempts, or at once for a permanent or invalid failure. If a replayed
-- event fails again, the same row is updated (status back to 'new') and the
-- audit trail keeps the history.

CREATE TABLE IF NOT EXISTS eventbus_dead_letters (
    id               uuid        PRIMARY KEY,
    group_name       text        NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    key              text        NOT NULL,
    envelope         jsonb       NOT NULL,   -- the original envelope, as JSON
    consumer         text        NOT NULL,
    stream           text        NOT NULL,
    partition        integer     NOT NULL,
    entry_id         text        NOT NULL,   -- the original stream entry id
    attempts         integer     NOT NULL,
    error_class      text        NOT NULL CHECK (error_class IN ('retryable', 'permanent', 'invalid')),
    error_message    text        NOT NULL,   -- capped in size by the writer
    first_failed_at  timestamptz NOT NULL,
    last_failed_at   timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'replayed', 'discarded')),
    replay_count     integer     NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (group_name, event_id)
);

CREATE INDEX IF NOT EXISTS eventbus_dead_letters_status ON eventbus_dead_letters (status, last_failed_at);
CREATE INDEX IF NOT EXISTS eventbus_dead_letters_type ON eventbus_dead_letters (event_type, last_failed_at);
CREATE INDEX IF NOT EXISTS eventbus_dead_letters_key ON eventbus_dead_letters (key);

-- Every action on a dead letter: dead_lettered, failed_again, replayed, discarded, purged.
CREATE TABLE IF NOT EXISTS eventbus_dead_letter_audit (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dead_letter_id  uuid        NOT NULL,
    action          text        NOT NULL,
    detail          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS eventbus_dead_letter_audit_dl ON eventbus_dead_letter_audit (dead_letter_id, at);
