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
