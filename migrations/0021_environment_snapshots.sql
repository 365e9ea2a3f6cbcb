-- Snapshots (issue 17): a member's personal environment saved from a running server's
-- container rather than built from a source. Counted against `environments.snapshots_per_member`
-- and never rebuilt. Older hubs neither read nor write it (they see a personal environment).
alter table environments add column snapshot boolean not null default false;
