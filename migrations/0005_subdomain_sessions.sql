-- Sessions on users' own subdomains (the origin-isolation option): a session of the hub's host
-- hands the browser a session of the user server's host. The child ends with its parent, so
-- signing out of the hub signs out of the servers' hosts too.
alter table sessions
    add column parent_session_id bigint references sessions (session_id) on delete cascade;
create index sessions_parent on sessions (parent_session_id) where parent_session_id is not null;
