-- Messages that were not stored: recorded, never dropped (docs/payloads.md, "Rejects"). Bounded in
-- size by the writer (payload truncated) and in time by retention on TimescaleDB.
CREATE TABLE rejected_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text        NOT NULL,
    device_id    text,                 -- from the topic, when it could be parsed
    reason       text        NOT NULL, -- stable label, also the reject metric's label
    detail       text,
    payload      bytea,                -- raw bytes, already truncated by the writer
    payload_size integer     NOT NULL  -- size before truncation
);

CREATE INDEX rejected_messages_received_at_idx ON rejected_messages (received_at);
CREATE INDEX rejected_messages_reason_received_at_idx
    ON rejected_messages (reason, received_at);

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- A hypertable's unique keys must include the partitioning column, so the key
        -- is (id, received_at); id alone is still unique (identity) and leads the index,
        -- so lookups by id stay cheap.
        ALTER TABLE rejected_messages
            ADD CONSTRAINT rejected_messages_pkey PRIMARY KEY (id, received_at);
        PERFORM create_hypertable('rejected_messages',
                                  by_range('received_at', INTERVAL '1 day'),
                                  create_default_indexes => false);
        -- Rejects are for diagnosis, not history: a month is plenty, and retention
        -- bounds the table even under a flood of bad messages.
        PERFORM add_retention_policy('rejected_messages', INTERVAL '30 days');
    ELSE
        ALTER TABLE rejected_messages
            ADD CONSTRAINT rejected_messages_pkey PRIMARY KEY (id);
    END IF;
END
$$;
