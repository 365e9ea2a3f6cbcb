-- The lab's data: groups' shared folders, datasets, backups.

-- A group may have a shared folder (a volume keyed by the group's id) mounted at
-- ~/shared/{group} in its members' servers; read-only for members (not leads) when asked.
alter table groups
    add column shared_folder    boolean not null default false,
    add column shared_read_only boolean not null default false;

-- The last measured size of each group's shared folder (it counts against the group's storage
-- limit).
create table group_storage (
    group_id    bigint primary key references groups (group_id) on delete cascade,
    bytes       bigint      not null,
    measured_at timestamptz not null
);

-- Data an admin registers, mounted read-only at ~/datasets/{name} for the groups it is granted
-- to, or for everyone.
create table datasets (
    dataset_id  bigint generated always as identity primary key,
    name        text        not null unique check (name ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$'),
    -- 'path': a folder of the machine the servers run on; 'volume': a volume of the engine.
    source_kind text        not null check (source_kind in ('path', 'volume')),
    source      text        not null,
    description text        not null default '',
    everyone    boolean     not null default true,
    created_at  timestamptz not null
);
create table dataset_groups (
    dataset_id bigint not null references datasets (dataset_id) on delete cascade,
    group_id   bigint not null references groups (group_id) on delete cascade,
    primary key (dataset_id, group_id)
);

-- Backups of homes and shared folders: each a compressed archive in the backup directory with
-- a manifest beside it; this is the index. An owner that is gone keeps its backups (the owner
-- id stays, without a reference).
create table backups (
    backup_id      bigint generated always as identity primary key,
    kind           text        not null check (kind in ('home', 'group', 'orphan')),
    owner_id       bigint,
    owner_name     text        not null,
    server_name    text        not null default '',
    volume         text        not null,
    file           text        not null unique,
    bytes          bigint      not null,
    sha256         text        not null,
    created_at     timestamptz not null,
    labhub_version text        not null
);
create index backups_owner on backups (kind, owner_id, created_at);

-- Each run of backups (scheduled or asked for), for the admin page and its banner.
create table backup_runs (
    run_id      bigint generated always as identity primary key,
    started_at  timestamptz not null,
    finished_at timestamptz,
    scheduled   boolean     not null,
    ok          boolean,
    detail      text        not null default ''
);
