-- Shelving an alert (docs/architecture.md, "Alerts", Shelving): a person puts a firing or
-- acknowledged alert aside until a time; meanwhile the engine neither re-notifies nor
-- escalates it, and when the shelf ends with the alert still open it announces it again
-- (an `unshelved` event). Ordinary tables: the same on PostgreSQL and TimescaleDB.

-- The shelf is the row's, so every engine replica and a restarted engine see it; the
-- engine clears it when it ends (and any resolve does), so a set `shelved_until` means
-- shelved now, or ended within a timer tick and about to be announced.
ALTER TABLE alerts
    ADD COLUMN shelved_until timestamptz,
    ADD COLUMN shelved_by    text,
    ADD CONSTRAINT alerts_shelf_whole
        CHECK ((shelved_until IS NULL) = (shelved_by IS NULL)),
    -- A pending alert was never announced and a resolved one is over: nothing to shelve.
    ADD CONSTRAINT alerts_shelf_open
        CHECK (shelved_until IS NULL OR state IN ('firing', 'acknowledged'));

CREATE INDEX alerts_shelved_idx ON alerts (shelved_until) WHERE shelved_until IS NOT NULL;

-- Two more kinds of event, by the person (with their note) or, for a shelf that ended on
-- its own, by the engine. `shelved_until` on a `shelved` event is the end of the shelf it
-- set, so the history keeps every shelf, also one replaced or cut short later.
ALTER TABLE alert_events
    DROP CONSTRAINT alert_events_kind_valid,
    ADD CONSTRAINT alert_events_kind_valid
        CHECK (kind IN ('pending', 'firing', 'renotify', 'escalated', 'acknowledged',
                        'resolved', 'shelved', 'unshelved')),
    ADD COLUMN shelved_until timestamptz;
