-- Directory sign-in ([auth.ldap]) with sync_groups: which memberships the directory gave.
-- At each sign-in the hub adds the person to the groups the directory names and takes them
-- out of those it gave before and no longer names; memberships an admin or a lead gave
-- (false, as every membership made before this column) are never touched by it.
alter table group_members add column from_directory boolean not null default false;
