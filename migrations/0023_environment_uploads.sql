-- Uploaded sources (issue 17): an environment built from an archive of a repository's files
-- instead of a git repository. The archive is kept as it was sent (a tar or tar.gz, at most
-- `environments.max_upload`) so that any replica can build it again, keyed by the SHA-256 of
-- the files as the hub reads them (`sha256:…`, what builds record as their commit): the same
-- files give the same key however they were packed.
create table environment_uploads (
    sha256      text        primary key,
    archive     bytea       not null,
    uploaded_by bigint      references users (user_id) on delete set null,
    uploaded_at timestamptz not null
);

-- Whether an environment's source is uploads (its `ref` is then the `sha256:` of the upload a
-- rebuild uses; its `source` reads 'upload'). Older hubs neither read nor write it: their
-- rebuild of such an environment fails, saying 'upload' is not a repository.
alter table environments add column uploaded boolean not null default false;
