-- A service's new or cleared URL moves its route: every hub process drops its proxy target
-- for the old address (closing the WebSockets through it) when `labhub_roles` says so.
create trigger services_url_changed after update of url on services
    for each statement execute function labhub_roles_changed();
