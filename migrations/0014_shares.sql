-- Sharing, as JupyterHub 5 has it: an owner lets other users, or every member of a group,
-- reach one of their servers (a share), or hands out a code that grants it to whoever signs in
-- and accepts it (a share code).

-- One grant on one server, to one user or one group. Keyed by the server's id, not by names:
-- removing a named server removes its shares, and a later server of the same name (or an
-- account that takes the owner's old name) inherits none. `scopes` are JupyterHub's scope
-- names without their filter (the hub adds `!server=owner/name` when it shows them, from the
-- names of the day): `access:servers`, `read:servers`, `servers`, `delete:servers`.
create table shares (
    share_id   bigint generated always as identity primary key,
    server_id  bigint      not null references servers (server_id) on delete cascade,
    user_id    bigint      references users (user_id) on delete cascade,
    group_id   bigint      references groups (group_id) on delete cascade,
    scopes     text[]      not null check (cardinality(scopes) > 0),
    created_at timestamptz not null,
    check ((user_id is null) <> (group_id is null))
);
create unique index shares_server_user on shares (server_id, user_id) where user_id is not null;
create unique index shares_server_group on shares (server_id, group_id) where group_id is not null;
create index shares_user_id on shares (user_id);
create index shares_group_id on shares (group_id);

-- A code that grants its scopes on its server to each signed-in user who accepts it, until it
-- expires. Only the code's SHA-256 is kept (the code is 32 random bytes, so a plain hash
-- suffices, as for API tokens); the code itself is shown once, when it is made.
create table share_codes (
    share_code_id     bigint generated always as identity primary key,
    server_id         bigint      not null references servers (server_id) on delete cascade,
    code_hash         bytea       not null unique check (length(code_hash) = 32),
    scopes            text[]      not null check (cardinality(scopes) > 0),
    created_at        timestamptz not null,
    expires_at        timestamptz not null,
    exchange_count    integer     not null default 0,
    last_exchanged_at timestamptz
);
create index share_codes_server_id on share_codes (server_id);

-- Who may reach which server is decided from memory on every proxied request; every hub
-- process (and the CLI's changes to groups) tells the others to reload it through this channel.
create function labhub_shares_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('labhub_shares', '');
    return null;
end;
$$;
create trigger shares_changed after insert or update or delete or truncate on shares
    for each statement execute function labhub_shares_changed();
create trigger share_groups_changed after insert or update or delete or truncate on group_members
    for each statement execute function labhub_shares_changed();
