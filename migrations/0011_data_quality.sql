-- Data quality at ingest. A metric the platform knows as numeric refuses text: the
-- catalog says what each metric holds: 'number' or 'text', from its first value (the
-- ESP metrics of shared/units.py are numbers whatever comes first), NULL until a value
-- has been stored. The ingestor rejects text for a 'number' metric (`text_for_number`),
-- so the raw API never mixes strings and numbers for one metric from then on.
-- Idempotent. A plain table on TimescaleDB too (the catalog is small).

ALTER TABLE metrics ADD COLUMN IF NOT EXISTS kind text
    CONSTRAINT metrics_kind_valid CHECK (kind IN ('number', 'text'));

UPDATE metrics AS m SET kind = 'number'
 WHERE m.kind IS NULL
   AND (m.name IN ('flow_rate', 'pip', 'discharge_pressure', 'wellhead_pressure',
                   'motor_current', 'motor_voltage', 'motor_temp', 'intake_temp',
                   'vibration', 'vsd_frequency', 'gor', 'power')
        OR EXISTS (SELECT 1 FROM telemetry_latest l WHERE l.metric = m.id AND l.value IS NOT NULL));

UPDATE metrics AS m SET kind = 'text'
 WHERE m.kind IS NULL
   AND EXISTS (SELECT 1 FROM telemetry_latest l WHERE l.metric = m.id AND l.value_text IS NOT NULL);

-- A device's recent rejects, with reasons and examples, through the API.
CREATE INDEX IF NOT EXISTS rejected_messages_device_received_at_idx
    ON rejected_messages (device_id, received_at);
