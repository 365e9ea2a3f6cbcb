-- Environments, continued (issue 17).

-- A build equal to an earlier good one (the same commit, recipe, base image and builder
-- version, its image still there) reuses that build's image instead of building: which build.
-- Older hubs neither read nor write it.
alter table environment_builds
    add column reused_build_id bigint references environment_builds (build_id) on delete set null;

-- The repository digest (`name@sha256:…`) of the image a session ran, when it had one
-- (pulled or pushed images; images built here have none).
alter table server_sessions add column repo_digest text;

-- The longest one environment build of the group may take; null: the site's
-- `environments.build_timeout` (which is also the most any group gets).
alter table group_quotas add column build_timeout_seconds integer check (build_timeout_seconds > 0);
