-- Signing in through identity providers: the identities linked to accounts, and the
-- sign-ins waiting for a provider to send the browser back.

-- An account's identity at a provider. The pair (provider, subject) *is* the identity: the
-- subject is the provider's stable id for the person, never their name or email, which the
-- person can change there. Provider tokens are not kept.
create table identities (
    identity_id   bigint generated always as identity primary key,
    user_id       bigint      not null references users (user_id) on delete cascade,
    -- The provider's id from the configuration (`[[auth.providers]] id`).
    provider      text        not null check (provider ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
    subject       text        not null check (length(subject) between 1 and 255),
    -- What the provider called the person at their last sign-in, for people reading lists.
    username      text        not null default '',
    email         text,
    created_at    timestamptz not null,
    last_login_at timestamptz not null,
    constraint identities_provider_subject_key unique (provider, subject)
);
create index identities_user_id on identities (user_id);

-- Sign-ins in flight. The browser holds the random `state` (in the provider's redirect) and
-- a random binding (in a cookie); only their SHA-256 is kept, so a leaked row cannot finish
-- anyone's sign-in. The PKCE verifier and the nonce are derived from the state with the hub's
-- key and never stored. A row is deleted when used, and ignored after ten minutes.
create table oauth_states (
    state_hash   bytea       primary key check (length(state_hash) = 32),
    provider     text        not null,
    binding_hash bytea       not null check (length(binding_hash) = 32),
    -- Where to go after signing in (a path on the hub, checked before it was stored).
    next         text        not null default '',
    created_at   timestamptz not null
);
create index oauth_states_created_at on oauth_states (created_at);
