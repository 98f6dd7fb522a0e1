-- Alert-rule engine (docs/architecture.md, "Alerts"): rules as data, alerts with their
-- lifecycle, every transition, how far each series has been evaluated, and the
-- deliveries of each rule's actions.

-- A rule's definition is validated by services/alerts/rules.py before it is written
-- (the API and `insa rules` both go through it); the engine re-validates on load and
-- skips, with a logged reason, a row that no longer validates.
CREATE TABLE rules (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    enabled    boolean     NOT NULL DEFAULT true,
    definition jsonb       NOT NULL
               CONSTRAINT rules_definition_object CHECK (jsonb_typeof(definition) = 'object'),
    builtin    boolean     NOT NULL DEFAULT false,  -- loaded by `insa rules load-defaults`
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Engines pick up rule changes without a restart: LISTEN insa_rules.
CREATE FUNCTION rules_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('insa_rules', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER rules_changed AFTER INSERT OR UPDATE OR DELETE ON rules
    FOR EACH ROW EXECUTE FUNCTION rules_notify();

-- One row per alert. Times are event times (the reading's `ts`) where a reading caused
-- the transition, wall-clock times where a timer or a person did.
CREATE TABLE alerts (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id          bigint      NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    device_id        text        NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    state            text        NOT NULL
                     CONSTRAINT alerts_state_valid
                     CHECK (state IN ('pending', 'firing', 'acknowledged', 'resolved')),
    severity         text        NOT NULL
                     CONSTRAINT alerts_severity_valid
                     CHECK (severity IN ('info', 'warning', 'critical')),
    value            double precision,   -- the last value that held the condition
    threshold        text,               -- what it was compared with, as the rule says it
    message          text        NOT NULL,
    active_since     timestamptz NOT NULL,  -- the condition first held
    fire_at          timestamptz NOT NULL,  -- active_since + the rule's `for`
    fired_at         timestamptz,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    resolved_by      text,
    last_notified_at timestamptz,
    escalated_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- At most one open alert per (rule, device): two engine replicas racing on the same
-- condition insert one row, and the loser adopts it (services/alerts/store.py).
CREATE UNIQUE INDEX alerts_one_open_per_rule_device ON alerts (rule_id, device_id)
    WHERE state <> 'resolved';
CREATE INDEX alerts_device_idx ON alerts (device_id, active_since DESC);
CREATE INDEX alerts_open_idx ON alerts (state) WHERE state <> 'resolved';

-- Every transition: pending, firing, renotify, escalated, acknowledged, resolved.
-- An outbox: `published_at` is set once the event is on insa:alerts and MQTT; pending
-- is recorded but not announced, so it is written already marked.
CREATE TABLE alert_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint      NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    kind         text        NOT NULL
                 CONSTRAINT alert_events_kind_valid
                 CHECK (kind IN ('pending', 'firing', 'renotify', 'escalated',
                                 'acknowledged', 'resolved')),
    state        text        NOT NULL,
    severity     text        NOT NULL,
    at           timestamptz NOT NULL,
    actor        text        NOT NULL,  -- 'engine', or the person or key that acted
    value        double precision,
    note         text,
    published_at timestamptz
);

CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, id);
CREATE INDEX alert_events_unpublished_idx ON alert_events (id) WHERE published_at IS NULL;

-- The newest value evaluated per (device, source): source is a metric name, or
-- 'diagnosis:<code>'. Older values (the stream redelivering what was evaluated before a
-- crash, or late data) are skipped: the late-data policy (docs/architecture.md).
CREATE TABLE alerts_progress (
    device_id text        NOT NULL,
    source    text        NOT NULL,
    last_ts   timestamptz NOT NULL,
    PRIMARY KEY (device_id, source)
);

-- A rule's webhook and e-mail actions for each published event (its MQTT actions go
-- out with the event itself, on the same connection): written when the
-- event is marked published, run by the engine's delivery worker with retries and
-- backoff; `dead` (the dead-letter record, with the last error) after the last try.
CREATE TABLE alert_deliveries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    bigint      NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    kind        text        NOT NULL
                CONSTRAINT alert_deliveries_kind_valid CHECK (kind IN ('webhook', 'email')),
    target      jsonb       NOT NULL,  -- the action as the rule defines it
    payload     jsonb       NOT NULL,  -- the alert event, as published
    status      text        NOT NULL DEFAULT 'pending'
                CONSTRAINT alert_deliveries_status_valid
                CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts    integer     NOT NULL DEFAULT 0,
    next_at     timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX alert_deliveries_dead_idx ON alert_deliveries (created_at) WHERE status = 'dead';
