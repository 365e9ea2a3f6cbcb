-- Environments, continued (issue 17).

-- A build equal to an earlier good one (the same commit, recipe, base image and builder
-- version, its image still there) reuses that build's image instead of building: which build.
-- Older hubs neither read nor write it.
alter table environment_builds
    add column reused_build_id bigint references environment_builds (build_id) on delete set null;
