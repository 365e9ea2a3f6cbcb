-- Several hub processes (replicas) on one database: who they are, which of them runs a
-- start, the starts' progress (so any replica can stream it), and the announcements that
-- keep each replica's caches (routes, recognised credentials) current. Only additions:
-- the previous version runs unchanged against this schema during a rolling upgrade.

-- Every `labhub serve` process registers here and beats every few seconds; one silent for
-- 15 s is taken for dead (its in-flight starts are failed by the others).
create table hub_replicas (
    replica_id     uuid        primary key,
    host           text        not null,
    version        text        not null,
    started_at     timestamptz not null,
    last_heartbeat timestamptz not null
);

-- The replica running a server's start (set with the pending mark; older versions leave it null).
alter table servers add column replica_id uuid;

-- The progress events of a server's latest start, in order; a new start of the server
-- replaces them.
create table spawn_events (
    server_id bigint      not null references servers (server_id) on delete cascade,
    spawn_id  uuid        not null,
    seq       integer     not null,
    event     jsonb       not null,
    at        timestamptz not null,
    primary key (server_id, spawn_id, seq)
);

-- A server's state or address changed: every replica reloads its route (payload: the id).
create function labhub_servers_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('labhub_servers', new.server_id::text);
    return null;
end $$;
create trigger servers_changed after update on servers for each row
    when (old.state is distinct from new.state or old.endpoint is distinct from new.endpoint
          or old.spawn_id is distinct from new.spawn_id)
    execute function labhub_servers_changed();

-- A session or token ended, or an account was disabled or lost or gained admin: every
-- replica forgets the credentials it recognised (no payload; no secret ever travels).
create function labhub_credentials_ended() returns trigger language plpgsql as $$
begin
    if exists (select 1 from gone) then
        perform pg_notify('labhub_credentials', '');
    end if;
    return null;
end $$;
create function labhub_rights_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('labhub_credentials', '');
    return null;
end $$;
create trigger sessions_ended after delete on sessions referencing old table as gone
    for each statement execute function labhub_credentials_ended();
create trigger api_tokens_ended after delete on api_tokens referencing old table as gone
    for each statement execute function labhub_credentials_ended();
-- A rename too: cached scopes name accounts and groups (`!user=alice`, `!group=lab`), and a
-- new account may take the old name.
create trigger users_rights_changed after update on users for each row
    when (old.state is distinct from new.state or old.admin is distinct from new.admin
          or old.name is distinct from new.name)
    execute function labhub_rights_changed();
create trigger groups_renamed after update on groups for each row
    when (old.name is distinct from new.name)
    execute function labhub_rights_changed();

-- One-time codes a user server's host exchanges for a session of its own (`user_subdomains`):
-- issued by one replica, redeemed at whichever the browser reaches next. SHA-256 of the code.
create table host_codes (
    code_hash  bytea       primary key check (length(code_hash) = 32),
    session_id bigint      not null references sessions (session_id) on delete cascade,
    host       text        not null,
    expires_at timestamptz not null
);
