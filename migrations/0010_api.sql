-- The API (docs/architecture.md, "API"): people, their sessions, machine keys, and the
-- commands sent to devices. Passwords and keys are stored as hashes only.

CREATE TABLE users (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL UNIQUE
                  CONSTRAINT users_username_format
                  CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    password_hash text        NOT NULL,  -- Argon2id, in its own encoded form
    role          text        NOT NULL
                  CONSTRAINT users_role_valid
                  CHECK (role IN ('admin', 'engineer', 'operator', 'viewer')),
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per refresh token issued. A refresh rotates: the old row is revoked and
-- points at its successor; presenting a revoked one again revokes its whole family
-- (every token descended from one login), as a stolen token would be replayed.
CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,          -- the token's `jti`
    family      uuid        NOT NULL,             -- the login it descends from
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    replaced_by uuid
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Machine and device credentials (`X-API-Key: insa_<prefix>_<secret>`). The prefix finds
-- the row; the SHA-256 of the whole key is compared in constant time. A key is a 256-bit
-- random token, so a fast hash suffices (nothing to brute-force, unlike a password).
CREATE TABLE api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL UNIQUE,
    key_hash     bytea       NOT NULL,
    name         text        NOT NULL,
    role         text        NOT NULL
                 CONSTRAINT api_keys_role_valid
                 CHECK (role IN ('admin', 'engineer', 'operator', 'viewer', 'device')),
    device_id    text        REFERENCES devices (device_id) ON DELETE CASCADE,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    CONSTRAINT api_keys_device_role CHECK (role <> 'device' OR device_id IS NOT NULL)
);

-- Commands sent to devices on insa/devices/<id>/command and their answers on
-- command/ack. `status` only moves forward (services/api/commands.py).
CREATE TABLE commands (
    id          uuid        PRIMARY KEY,
    device_id   text        NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    name        text        NOT NULL,
    params      jsonb       NOT NULL DEFAULT '{}',
    status      text        NOT NULL DEFAULT 'pending'
                CONSTRAINT commands_status_valid
                CHECK (status IN ('pending', 'accepted', 'done', 'failed', 'timed_out')),
    result      jsonb,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL  -- unanswered by then: timed_out
);

CREATE INDEX commands_device_idx ON commands (device_id, created_at DESC);
CREATE INDEX commands_open_idx ON commands (expires_at) WHERE status IN ('pending', 'accepted');

-- Audit queries by actor (who did what) as well as by subject and time (0006).
CREATE INDEX audit_log_actor_at_idx ON audit_log (actor, at);
