-- eventbus 0003: dead letters of class 'parked'.
--
-- In park mode an ordered consumer holds the later events of a key that has
-- an event in dead letters: they are dead-lettered at once, unhandled, with
-- error_class 'parked' (see docs/dead-letters.md, "Park mode").

ALTER TABLE eventbus_dead_letters
    DROP CONSTRAINT IF EXISTS eventbus_dead_letters_error_class_check;
ALTER TABLE eventbus_dead_letters
    ADD CONSTRAINT eventbus_dead_letters_error_class_check
    CHECK (error_class IN ('retryable', 'permanent', 'invalid', 'parked'));
