-- Login throttling shared by every server instance: failed logins per key (`user:<name>` or
-- `addr:<ip>`), counted within a window, and the time before which the next attempt is refused.
-- Timestamps are unix milliseconds.

create table login_throttle (
    throttle_key text primary key,
    failures integer not null,
    last_failure_at integer not null,
    blocked_until integer not null default 0
);
