-- Accounts, sessions, API tokens and the audit log.

-- Users. Names are stored already normalised (lower case, see labhub-core's UserName),
-- so a plain unique index makes names that differ only in case one user.
create table users (
    user_id       bigint generated always as identity primary key,
    name          text        not null unique
                  check (name = lower(name) and length(name) between 1 and 64),
    admin         boolean     not null default false,
    -- active: may sign in; pending: signed up, waiting for an admin; disabled: locked out.
    state         text        not null default 'active'
                  check (state in ('active', 'pending', 'disabled')),
    -- argon2id PHC string; null for accounts that only sign in through a provider.
    password_hash text,
    created_at    timestamptz not null,
    last_activity timestamptz
);

-- Browser sessions. The cookie carries a random token; only its SHA-256 is kept here,
-- so a leaked database does not leak sessions.
create table sessions (
    session_id   bigint generated always as identity primary key,
    token_hash   bytea       not null unique check (length(token_hash) = 32),
    user_id      bigint      not null references users (user_id) on delete cascade,
    created_at   timestamptz not null,
    last_seen_at timestamptz not null,
    -- absolute expiry; the idle limit is checked against last_seen_at.
    expires_at   timestamptz not null,
    user_agent   text        not null default '',
    client_addr  text        not null default ''
);
create index sessions_user_id on sessions (user_id);

-- API tokens: shown once at creation, stored as SHA-256. `prefix` (the first characters)
-- lets a person recognise a token in lists without it being usable.
create table api_tokens (
    token_id     bigint generated always as identity primary key,
    token_hash   bytea       not null unique check (length(token_hash) = 32),
    prefix       text        not null,
    user_id      bigint      not null references users (user_id) on delete cascade,
    note         text        not null default '',
    created_at   timestamptz not null,
    expires_at   timestamptz,
    last_used_at timestamptz
);
create index api_tokens_user_id on api_tokens (user_id);

-- Who did what. Actor and target are names, not keys, so the record outlives the user.
create table audit_log (
    audit_id bigint generated always as identity primary key,
    at       timestamptz not null,
    actor    text        not null,
    action   text        not null,
    target   text        not null default '',
    detail   jsonb       not null default '{}'
);
create index audit_log_at on audit_log (at desc);
create index audit_log_action on audit_log (action);

-- The audit log is append-only: the hub never changes or removes a record, and neither can
-- a bug in it.
create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'the audit log is append-only';
end;
$$;
create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
