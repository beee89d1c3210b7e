-- eventbus 0005: scheduled delivery from the outbox.
--
-- deliver_at: when the event is due (NULL = now). The relay claims the row
-- as usual; an event due later waits in Redis (the partition's scheduled
-- set, docs/scheduled.md) until a scheduler moves it to its stream. A past
-- time, -infinity or NULL is published at once; a time further ahead than
-- EVENT_BUS_MAX_DELAY (infinity included) is moved to dead letters with its
-- reason: no value blocks the relay.
ALTER TABLE eventbus_outbox ADD COLUMN IF NOT EXISTS deliver_at timestamptz;
