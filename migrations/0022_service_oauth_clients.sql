-- Registered services as OAuth clients of the hub's provider (JupyterHub's services sign
-- users in through the hub): a service with a URL is the client `service-{name}`, whose
-- secret is the service's API token and whose redirect URI is
-- `/services/{name}/oauth_callback`. A client now belongs to a running server or to a
-- service, exactly one of the two; removing the service removes its client and, by the
-- existing cascades, the codes and access tokens issued to it.
--
-- The client's own `secret_hash` stays required and unique: a service's row holds a random
-- value that matches no token, since its secret is checked against `services.token_hash`
-- (the one place a service's token is kept). So a service's API token is never mistaken for
-- a server's by anyone reading `oauth_clients` by secret.
--
-- Backward compatible for one version: every row the previous version wrote has a
-- `server_id` and no `service_id`, and it writes only such rows, which satisfy the check. It
-- reads clients by a server's id, by a server's secret, or by a client id that a server of
-- JupyterHub's contract presents; only a service (which it does not know) presents a
-- `service-…` id or a service's access token, and it then answers with an error instead of a
-- refusal. Nothing it served before changes.
alter table oauth_clients alter column server_id drop not null;
alter table oauth_clients add column service_id bigint unique references services (service_id) on delete cascade;
alter table oauth_clients add constraint oauth_clients_one_holder check ((server_id is null) <> (service_id is null));
