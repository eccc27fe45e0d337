-- Who may act: API keys (their secrets stored hashed), local users (passwords hashed with argon2id), the
-- sessions a local user's sign-in opens, and the audit log of every mutating call.
CREATE TABLE IF NOT EXISTS terrain_access_keys (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL,
    scope       text[]      NOT NULL,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    revoked_by  text
);
-- A name names one live key: a revoked key's name may be given again.
CREATE UNIQUE INDEX IF NOT EXISTS terrain_access_keys_live_name ON terrain_access_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS terrain_access_users (
    name          text        PRIMARY KEY,
    role          text        NOT NULL,
    scope         text[]      NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    disabled_at   timestamptz
);

CREATE TABLE IF NOT EXISTS terrain_access_sessions (
    id          text        PRIMARY KEY,
    user_name   text        NOT NULL REFERENCES terrain_access_users (name) ON DELETE CASCADE,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    address     text
);
CREATE INDEX IF NOT EXISTS terrain_access_sessions_expires_at ON terrain_access_sessions (expires_at);

CREATE TABLE IF NOT EXISTS terrain_audit (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    service  text        NOT NULL,
    subject  text        NOT NULL,
    actor    text        NOT NULL,
    role     text        NOT NULL,
    method   text        NOT NULL,
    route    text        NOT NULL,
    path     text        NOT NULL,
    status   int         NOT NULL,
    address  text
);
CREATE INDEX IF NOT EXISTS terrain_audit_at ON terrain_audit (at);
