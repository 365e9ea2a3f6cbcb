-- Homes made before homes were keyed by account id were named after their owner's name, which
-- a later account of the same name could inherit. Each such volume is adopted once, by the
-- account that had the name when the volume was made (created no later than the volume), and
-- recorded here by that account's id; a volume no account can claim stays an orphan for an
-- admin. Deleting the account deletes the record, which leaves the volume an orphan too.
create table legacy_homes (
    volume      text   primary key,
    user_id     bigint not null references users (user_id) on delete cascade,
    -- '' for the home shared by all of the account's servers.
    server_name text   not null default '',
    unique (user_id, server_name)
);
