-- Flood guard (docs/architecture.md, "Flood guard") and the audit trail.

-- One row stands for this many messages: a flooding device's messages over its rate
-- limit are recorded as one row per device per batch, not one row each.
ALTER TABLE rejected_messages
    ADD COLUMN message_count integer NOT NULL DEFAULT 1
    CONSTRAINT rejected_messages_message_count_positive CHECK (message_count > 0);

-- Broker accounts disabled for a cool-down. The row is written before the broker is told,
-- so the account is enabled again when `until` passes even if the service that disabled
-- it restarted in between. Keyed by the account name, which need not be a known device.
CREATE TABLE device_suspensions (
    device_id    text        PRIMARY KEY,
    reason       text        NOT NULL,
    detail       text,
    suspended_at timestamptz NOT NULL DEFAULT now(),
    until        timestamptz NOT NULL,
    -- Set once the broker confirmed the disable; the re-enable deletes the row.
    confirmed_at timestamptz
);

CREATE INDEX device_suspensions_until_idx ON device_suspensions (until);

-- Who did what to which account or object, and whether it worked (IEC 62443 SR 2.8).
-- Append-only, and kept out of any retention policy.
CREATE TABLE audit_log (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text        NOT NULL,  -- account or service that acted
    action  text        NOT NULL,  -- stable label, e.g. device.suspend
    subject text,                  -- what it acted on, e.g. a device id
    outcome text        NOT NULL DEFAULT 'success'
            CONSTRAINT audit_log_outcome_valid CHECK (outcome IN ('success', 'failure')),
    detail  jsonb       NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_subject_at_idx ON audit_log (subject, at);
