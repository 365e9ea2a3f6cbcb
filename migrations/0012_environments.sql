-- Environments: catalogue entries the hub builds itself from a source (a git repository at a
-- ref) and the history of their builds, with each build's provenance.

-- Whether a group's members may build personal environments (leads always build for the
-- group, admins for the lab).
alter table groups add column members_build_environments boolean not null default false;

-- An environment is one catalogue entry (`images` row, same name) plus where it comes from.
-- Whose it is: the lab's (no group, no owner), a group's, or one member's (personal).
create table environments (
    environment_id  bigint generated always as identity primary key,
    image_id        bigint      not null unique references images (image_id) on delete cascade,
    source          text        not null,
    ref             text        not null,
    group_id        bigint      references groups (group_id) on delete cascade,
    owner_id        bigint      references users (user_id) on delete cascade,
    -- The catalogue entry it builds on (an admin's choice); null: the lab's JupyterLab.
    base            text,
    -- The build the catalogue entry serves whatever is newer (set by an admin), if any.
    pinned_build_id bigint,
    created_at      timestamptz not null,
    check (group_id is null or owner_id is null)
);

-- Every build of an environment, good or not, with its provenance. A build that is
-- 'building' when the hub stops is marked failed at the next boot.
create table environment_builds (
    build_id        bigint generated always as identity primary key,
    environment_id  bigint      not null references environments (environment_id) on delete cascade,
    ref             text        not null,
    status          text        not null check (status in ('building', 'ready', 'failed')),
    -- Provenance, filled in as the build learns it.
    commit          text,
    recipe_hash     text,
    base_image_id   text,
    image_id        text,
    tag             text        not null,
    builder_version text        not null,
    built_by        bigint      references users (user_id) on delete set null,
    built_by_name   text        not null,
    started_at      timestamptz not null,
    finished_at     timestamptz,
    -- Why it failed, in words for the person who asked.
    error           text,
    -- The build's output (its last part, bounded), for the log after the build ended.
    log             text        not null default ''
);
create index environment_builds_environment on environment_builds (environment_id, build_id desc);

alter table environments
    add constraint environments_pinned_build_fkey
    foreign key (pinned_build_id) references environment_builds (build_id) on delete set null;

-- Every server start that came up, as a session: who, which server, the catalogue entry and
-- environment build, the exact image id run, the resources and group, start and stop. Opened
-- when the server is recorded running, closed when it is recorded stopped (the same
-- statements), so no path that starts or stops a server can miss it.
create table server_sessions (
    session_id   bigint generated always as identity primary key,
    -- Null once the server is removed (its history stays with the account).
    server_id    bigint      references servers (server_id) on delete set null,
    spawn_id     uuid        not null,
    user_id      bigint      not null references users (user_id) on delete cascade,
    server_name  text        not null,
    image_id     bigint      references images (image_id) on delete set null,
    image_name   text,
    image_ref    text        not null,
    -- The content id (sha256:…) the container ran.
    image_digest text        not null,
    build_id     bigint      references environment_builds (build_id) on delete set null,
    cpu_millis   integer     not null,
    memory_bytes bigint      not null,
    gpus         integer     not null,
    group_id     bigint      references groups (group_id) on delete set null,
    group_name   text,
    started_at   timestamptz not null,
    stopped_at   timestamptz,
    stop_reason  text,
    unique (server_id, spawn_id)
);
create index server_sessions_user on server_sessions (user_id, session_id desc);
create index server_sessions_started on server_sessions (started_at);
