-- JupyterHub's access model: roles (named lists of scopes) assigned to users, groups and
-- services; services registered with the hub; scopes on API tokens.
--
-- Scopes are stored as written (`read:users!group=lab`, `self`, `inherit`) and expanded by
-- the hub (labhub-core's `scope` module), so a role changed here means what it says at once.

-- A role: a name and the scopes it grants. The built-in ones are seeded below; the hub
-- refuses to delete them. `admin` is also what `users.admin` grants (that flag stays the
-- truth for who is an admin, so code of the previous version still decides alike), and
-- every user holds `user` without an assignment.
create table roles (
    role_id     bigint generated always as identity primary key,
    name        text        not null unique check (name = lower(name) and length(name) between 1 and 64),
    description text        not null default '',
    scopes      text[]      not null default '{}',
    builtin     boolean     not null default false,
    created_at  timestamptz not null
);

insert into roles (name, description, scopes, builtin, created_at) values
    ('user', 'Everything a user may do with their own things', '{self}', true, '1970-01-01T00:00:00Z'),
    ('admin', 'Everything, for every user',
     '{admin-ui,admin:users,admin:servers,tokens,admin:groups,list:services,read:services,read:hub,proxy,shutdown,access:services,access:servers,read:roles,read:metrics,shares}',
     true, '1970-01-01T00:00:00Z'),
    ('server', 'What a single-user server''s own token may do',
     '{users:activity!user,access:servers!server}', true, '1970-01-01T00:00:00Z'),
    ('token', 'A token''s default: everything its owner may do', '{inherit}', true, '1970-01-01T00:00:00Z');

-- Roles given to users beyond `user` (and `admin`, which is the users.admin flag).
create table user_roles (
    user_id bigint not null references users (user_id) on delete cascade,
    role_id bigint not null references roles (role_id) on delete cascade,
    primary key (user_id, role_id)
);
create index user_roles_role_id on user_roles (role_id);

-- Roles given to every member of a group.
create table group_roles (
    group_id bigint not null references groups (group_id) on delete cascade,
    role_id  bigint not null references roles (role_id) on delete cascade,
    primary key (group_id, role_id)
);
create index group_roles_role_id on group_roles (role_id);

-- An external service: a name (its route `/services/{name}/` and `!service=` filter), where
-- the proxy sends that route (none: the service only calls the API), and its API token, of
-- which only the SHA-256 is kept (as for users' tokens); the token is shown once.
create table services (
    service_id    bigint generated always as identity primary key,
    name          text        not null unique check (name = lower(name) and length(name) between 1 and 64),
    url           text,
    token_hash    bytea       not null unique check (length(token_hash) = 32),
    token_prefix  text        not null,
    created_at    timestamptz not null,
    last_activity timestamptz
);

-- Roles given to services (a service holds nothing else).
create table service_roles (
    service_id bigint not null references services (service_id) on delete cascade,
    role_id    bigint not null references roles (role_id) on delete cascade,
    primary key (service_id, role_id)
);
create index service_roles_role_id on service_roles (role_id);

-- A token's scopes as written. The default `inherit` keeps every token made before scopes
-- meaning what it meant (its owner's powers); a token made with scopes holds at most the
-- intersection of those and its owner's. `server_id` names the server a server's own token
-- was issued for (what `!server` stands for); none for ordinary tokens.
alter table api_tokens
    add column scopes    text[] not null default '{inherit}',
    add column server_id bigint references servers (server_id) on delete cascade;
create index api_tokens_server_id on api_tokens (server_id) where server_id is not null;

-- Credentials are decided from memory; every change to who holds which role (in this
-- process, another one, or the CLI) tells each hub process to drop what it remembered.
create function labhub_roles_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('labhub_roles', '');
    return null;
end;
$$;
create trigger roles_changed after insert or update or delete or truncate on roles
    for each statement execute function labhub_roles_changed();
create trigger user_roles_changed after insert or update or delete or truncate on user_roles
    for each statement execute function labhub_roles_changed();
create trigger group_roles_changed after insert or update or delete or truncate on group_roles
    for each statement execute function labhub_roles_changed();
create trigger service_roles_changed after insert or update or delete or truncate on service_roles
    for each statement execute function labhub_roles_changed();
-- (A service's activity is no change of powers, so updates count only for its token.)
create trigger services_changed after insert or delete or truncate on services
    for each statement execute function labhub_roles_changed();
create trigger services_token_changed after update of token_hash on services
    for each statement execute function labhub_roles_changed();
-- Group roles follow memberships, whose changes `labhub_shares` already announces.
