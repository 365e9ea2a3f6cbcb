-- Volumes of an account's besides its home: a backup restored for it
-- (`labhub backup restore ID --user OWNER --into NAME`), mounted at ~/restored/{folder} in that
-- account's servers and nobody else's. The volume itself is labelled with the account's id
-- (the spawner names it from user_id and key), so when the account is deleted it goes with
-- the account's storage or stays as an orphan, like the home.
create table attached_volumes (
    user_id    bigint      not null references users (user_id) on delete cascade,
    -- What names the volume: `a-z`, `0-9`, `.` (e.g. `backup.12`).
    key        text        not null check (key ~ '^[a-z0-9.]{1,40}$'),
    -- Where it is mounted, under ~/restored/.
    folder     text        not null check (folder ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    backup_id  bigint,
    created_at timestamptz not null,
    primary key (user_id, key),
    unique (user_id, folder)
);
