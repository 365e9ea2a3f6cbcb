-- Which Swarm nodes a catalogue entry's servers may run on: placement constraints as Swarm
-- reads them (`node.labels.gpu==true`), added to the site's `docker.swarm_constraints`.
-- Empty for every existing entry; a replica of the previous version ignores the column and
-- writes entries without it (the default keeps them valid).
alter table images add column placement text[] not null default '{}';
-- And which nodes a group's servers may run on (a lab's GPU nodes for its GPU group), added
-- after the catalogue entry's for every server charged to the group.
alter table groups add column placement text[] not null default '{}';
