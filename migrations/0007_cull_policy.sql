-- Whether the idle timeout also stops a Jupyter server whose kernel is busy or that has a
-- terminal open. Off by default: a running computation counts as use. A hub of the previous
-- version neither reads nor writes the column, so the default keeps its rows meaning what they did.
alter table group_quotas add column cull_busy boolean not null default false;
