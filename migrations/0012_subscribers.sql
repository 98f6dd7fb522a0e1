-- Subscriber accounts (docs/operations.md, "Subscriber accounts"): operators' systems that
-- read alerts, diagnoses and rule notifications over MQTT. A system has one broker role,
-- `subscriber:<name>`, granting its topic filters; each consumer has a broker account of
-- its own, `<name>.<consumer>`, which is also its client id. The broker keeps the accounts
-- and their password hashes; these tables keep what the API shows, never a password.

CREATE TABLE subscribers (
    -- The device-id pattern without `.` (it separates system and consumer), not `insa-`.
    name        text        PRIMARY KEY
                CONSTRAINT subscribers_name_format
                CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_:-]{0,127}$'
                       AND lower(name) NOT LIKE 'insa-%'),
    description text,
    topics      text[]      NOT NULL
                CONSTRAINT subscribers_topics_given CHECK (cardinality(topics) > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Names differing only in case would pass for one another in a log or the audit trail.
CREATE UNIQUE INDEX subscribers_name_lower_idx ON subscribers (lower(name));

CREATE TABLE subscriber_consumers (
    subscriber text        NOT NULL REFERENCES subscribers (name) ON DELETE CASCADE,
    name       text        NOT NULL
               CONSTRAINT subscriber_consumers_name_format
               CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,  -- its last new password
    PRIMARY KEY (subscriber, name)
);
