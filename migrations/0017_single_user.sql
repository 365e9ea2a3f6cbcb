-- JupyterHub's single-user contract and the hub as an OAuth2 provider.

-- Which contract a catalogue entry's servers speak: labhub's own (the proxy injects the
-- server's secret) or JupyterHub's (`jupyterhub-singleuser`, OAuth through the hub). Old code
-- ignores the column, and every existing entry keeps labhub's contract.
alter table images add column contract text not null default 'labhub'
    check (contract in ('labhub', 'jupyterhub'));

-- The contract a server was started with (read back when a restarted hub adopts it).
alter table servers add column contract text not null default 'labhub'
    check (contract in ('labhub', 'jupyterhub'));

-- OAuth clients of the hub's provider. A server of JupyterHub's contract is one for as long as
-- it runs: `client_id` as JupyterHub names it (`jupyterhub-user-{name}[-{server}]`), its
-- secret is the server's API token (`JUPYTERHUB_API_TOKEN`, which `jupyterhub-singleuser`
-- also sends as `client_secret`), kept as its SHA-256, with that token's scopes (JupyterHub's
-- `server` role, filtered to the server and its owner). The stop deletes the row, and with it
-- the token, the codes and the access tokens below.
create table oauth_clients (
    client_id    text        primary key,
    server_id    bigint      not null unique references servers (server_id) on delete cascade,
    secret_hash  bytea       not null unique check (length(secret_hash) = 32),
    redirect_uri text        not null,
    scopes       text[]      not null,
    created_at   timestamptz not null
);

-- Authorization codes: single-use (the exchange deletes them), short-lived, stored as their
-- SHA-256, bound to the client and the redirect URI they were given for.
create table oauth_codes (
    code_hash    bytea       primary key check (length(code_hash) = 32),
    client_id    text        not null references oauth_clients (client_id) on delete cascade,
    user_id      bigint      not null references users (user_id) on delete cascade,
    redirect_uri text        not null,
    scopes       text[]      not null,
    created_at   timestamptz not null,
    expires_at   timestamptz not null
);

-- Access tokens the provider issued: a user signed in to a client, with the scopes granted.
create table oauth_tokens (
    token_hash bytea       primary key check (length(token_hash) = 32),
    client_id  text        not null references oauth_clients (client_id) on delete cascade,
    user_id    bigint      not null references users (user_id) on delete cascade,
    scopes     text[]      not null,
    created_at timestamptz not null
);
create index oauth_tokens_client_id on oauth_tokens (client_id);
create index oauth_codes_client_id on oauth_codes (client_id);
