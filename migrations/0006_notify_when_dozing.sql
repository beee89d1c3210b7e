-- eventbus 0006: writers notify only while a relay dozes.
--
-- Every transaction that runs NOTIFY commits one at a time, server-wide
-- (PostgreSQL holds the notification queue's lock until the commit is
-- flushed), so a notification per commit capped applications' commit rate
-- at one WAL flush at a time whenever a relay was listening. A relay that
-- finds nothing to do holds the advisory lock (hashtext(channel), -1) while
-- it waits (docs/outbox.md, "Waking the relay"); a relay that works does
-- not need waking. The trigger tries that lock in shared mode: refused (a
-- relay holds it or waits for it) -> notify; granted -> no notification,
-- and the shared lock, held to commit, makes a relay about to wait first
-- wait for this transaction, then look again: no wake-up is lost.
CREATE OR REPLACE FUNCTION eventbus_outbox_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(hashtext('eventbus_outbox.' || TG_TABLE_SCHEMA), -1) THEN
        PERFORM pg_notify('eventbus_outbox.' || TG_TABLE_SCHEMA, '');
    END IF;
    RETURN NULL;
END
$$;
