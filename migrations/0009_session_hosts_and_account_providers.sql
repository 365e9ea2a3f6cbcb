-- A session handed to a user server's own host (origin isolation) works only on that host, and
-- a session of the hub's host only there: otherwise a code for a user's host, caught by that
-- host's pages, would give them a session the hub's host accepts as whoever opened the server.
-- Null for the hub's sessions. Children made before this column (by an older hub) have none and
-- are accepted nowhere: their browsers simply go through the hand-off again.
alter table sessions add column host text;

-- The identity provider whose identity of the same name may claim an account that has no
-- password and no identity yet, at its first sign-in: the provider an admin named creating the
-- account, or the provider that created it. Null: no provider may claim the account by its name
-- (accounts made before this column included, until an admin names one for them).
alter table users add column link_provider text;
