-- The image catalogue and users' servers.

-- What members may start. Only catalogue images can be started.
create table images (
    image_id     bigint generated always as identity primary key,
    -- A short stable name used in forms, the API and the CLI (e.g. "jupyterlab").
    name         text        not null unique check (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    display_name text        not null check (length(display_name) between 1 and 100),
    description  text        not null default '',
    -- A container image reference, validated by the hub (labhub-core's ImageRef).
    reference    text        not null,
    kind         text        not null check (kind in ('jupyter', 'rstudio', 'custom')),
    -- For custom images: the port the server listens on and the command that starts it.
    port         integer     check (port between 1 and 65535),
    command      jsonb,
    cpu_millis   integer     not null check (cpu_millis > 0),
    memory_bytes bigint      not null check (memory_bytes > 0),
    enabled      boolean     not null default true,
    -- A built-in recipe that can build this image locally when it cannot be pulled.
    recipe       text,
    created_at   timestamptz not null,
    updated_at   timestamptz not null
);

-- Users' servers, default ('' name) and named. A row outlives its container: it keeps what
-- ran last and why it stopped.
create table servers (
    server_id     bigint generated always as identity primary key,
    user_id       bigint      not null references users (user_id) on delete cascade,
    name          text        not null default '' check (name = '' or name ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    -- stopped -> pending -> running -> stopping -> stopped; a failed start goes back to stopped.
    state         text        not null default 'stopped'
                  check (state in ('pending', 'running', 'stopping', 'stopped')),
    image_id      bigint      references images (image_id) on delete set null,
    -- What was started, as it was at the time (the catalogue may change later).
    image_ref     text,
    image_digest  text,
    kind          text        check (kind in ('jupyter', 'rstudio', 'custom')),
    cpu_millis    integer,
    memory_bytes  bigint,
    gpus          integer     not null default 0,
    -- A new random id per start: the server's secret token is derived from it.
    spawn_id      uuid,
    spawner_state jsonb       not null default '{}',
    -- ip:port when running.
    endpoint      text,
    created_at    timestamptz not null,
    started_at    timestamptz,
    last_activity timestamptz,
    stopped_at    timestamptz,
    -- Why it last stopped or failed, for the user ("stopped by you", "exited with code 1").
    stop_reason   text,
    unique (user_id, name)
);
create index servers_active on servers (state) where state <> 'stopped';
