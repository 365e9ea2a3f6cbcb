-- Swarm mode with `swarm_homes = "pinned"`: the node each user's homes live on, chosen at
-- their first start and kept, so every later start runs where their files are. Only an
-- addition: the previous version runs unchanged against this schema.
create table swarm_node_pins (
    user_id   bigint      primary key references users (user_id) on delete cascade,
    node      text        not null,
    pinned_at timestamptz not null
);
create index swarm_node_pins_node on swarm_node_pins (node);
