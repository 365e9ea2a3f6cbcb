-- Groups, lab leads and quotas; which group a server is charged to; measured storage and
-- sampled resource use for the usage view.

-- A lab, course or team. Its name follows labhub-core's GroupName rule (stored normalised).
create table groups (
    group_id   bigint generated always as identity primary key,
    name       text        not null check (name = lower(name) and length(name) between 1 and 64),
    created_at timestamptz not null,
    constraint groups_name_key unique (name)
);

-- Who belongs to a group, and who leads it. A lead is a member with more rights in this
-- group only; a person may be in several groups.
create table group_members (
    group_id bigint      not null references groups (group_id) on delete cascade,
    user_id  bigint      not null references users (user_id) on delete cascade,
    role     text        not null default 'member' check (role in ('member', 'lead')),
    added_at timestamptz not null,
    primary key (group_id, user_id)
);
create index group_members_user_id on group_members (user_id);

-- A group's limits. Two records per group at most: the 'ceiling' an admin sets, and the
-- 'quota' in force, which a lead may change within the ceiling. A missing record means the
-- site default from the configuration, so groups nobody configured follow it when it changes.
-- A null limit means "no limit" (budgets, storage) or "never" (idle timeout, lifetime).
create table group_quotas (
    group_id               bigint      not null references groups (group_id) on delete cascade,
    kind                   text        not null check (kind in ('quota', 'ceiling')),
    -- Per server.
    max_cpu_millis         integer     not null check (max_cpu_millis > 0),
    max_memory_bytes       bigint      not null check (max_memory_bytes > 0),
    max_gpus               integer     not null check (max_gpus >= 0),
    -- Catalogue image names the group may start; null: every enabled catalogue image.
    images                 text[],
    -- Per member: servers running at once under this group.
    max_servers_per_member integer     not null check (max_servers_per_member >= 0),
    -- Per group: the sum over all active servers charged to it.
    budget_cpu_millis      bigint      check (budget_cpu_millis >= 0),
    budget_memory_bytes    bigint      check (budget_memory_bytes >= 0),
    -- Per user: the size a user's storage may reach before starts are refused.
    storage_bytes          bigint      check (storage_bytes >= 0),
    idle_timeout_seconds   integer     check (idle_timeout_seconds > 0),
    max_lifetime_seconds   integer     check (max_lifetime_seconds > 0),
    updated_at             timestamptz not null,
    primary key (group_id, kind)
);

-- The group a server was started under, whose budget it uses; null for users in no group
-- (they share the site default's budget). Kept after a stop as a record of the last start.
alter table servers add column group_id bigint references groups (group_id) on delete set null;
create index servers_active_group on servers (group_id) where state <> 'stopped';

-- The measured size of users' storage, refreshed periodically (measuring is not free, so a
-- start reads the last measurement rather than measuring). One row per user and server
-- name, since storage may be per server; with shared storage the rows hold the same size.
create table storage_usage (
    user_id     bigint      not null references users (user_id) on delete cascade,
    server_name text        not null default '',
    bytes       bigint      not null check (bytes >= 0),
    measured_at timestamptz not null,
    primary key (user_id, server_name)
);

-- Resource use of each group over time (from the runtime's stats), for the usage chart:
-- what its running servers used and what they had reserved. Kept for a bounded time.
create table group_usage_samples (
    group_id         bigint      not null references groups (group_id) on delete cascade,
    at               timestamptz not null,
    cpu_millis       bigint      not null,
    memory_bytes     bigint      not null,
    cpu_reserved     bigint      not null,
    memory_reserved  bigint      not null,
    primary key (group_id, at)
);
create index group_usage_samples_at on group_usage_samples (at);

-- The latest live use of each active server, for the per-member view.
create table server_usage (
    server_id    bigint      primary key references servers (server_id) on delete cascade,
    at           timestamptz not null,
    cpu_millis   bigint      not null,
    memory_bytes bigint      not null
);
