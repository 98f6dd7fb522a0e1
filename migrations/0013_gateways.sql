-- Gateways (docs/payloads.md, "Gateways"): one broker account that publishes for many
-- child devices. The ingestor takes a child's data from a gateway only when the device's
-- gateway_id names that gateway, or registers it so on first sight when the gateway has
-- auto_register.

CREATE TABLE gateways (
    gateway_id        text        PRIMARY KEY
                      CONSTRAINT gateways_gateway_id_format
                      CHECK (gateway_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    name              text,
    -- json: the platform's own topics; sparkplug: a Sparkplug B edge node <group>:<edge>.
    protocol          text        NOT NULL DEFAULT 'json'
                      CONSTRAINT gateways_protocol_valid
                      CHECK (protocol IN ('json', 'sparkplug')),
    auto_register     boolean     NOT NULL DEFAULT false,
    metadata          jsonb       NOT NULL DEFAULT '{}',
    -- The gateway's own connection, from its retained status and Last Will.
    status            text        NOT NULL DEFAULT 'unknown'
                      CONSTRAINT gateways_status_valid
                      CHECK (status IN ('unknown', 'online', 'offline')),
    status_changed_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Deleting a gateway leaves its devices and their data, unassigned.
ALTER TABLE devices
    ADD COLUMN gateway_id text REFERENCES gateways (gateway_id) ON DELETE SET NULL;

CREATE INDEX devices_gateway_id_idx ON devices (gateway_id) WHERE gateway_id IS NOT NULL;
