-- Running as N instances on one database (issue: scale-out). Stands alone: no reference to tables
-- of other migrations.

-- "Allow once" consents: a user's consent for one session and one terminal, spent by the read it
-- allowed. In the database so that an instance other than the one that recorded it honours it.
create table consent_once (
    session_hash text not null,
    terminal_id text not null,
    created_at bigint not null,
    primary key (session_hash, terminal_id)
);

-- The instances serving this database: each renews its lease every heartbeat; one whose lease
-- ran out is gone (its agents reconnect elsewhere).
create table cluster_instance (
    instance_id text primary key,
    started_at bigint not null,
    lease_until bigint not null,
    -- Where it listens (for the operator; nothing routes by it).
    listen text not null
);

-- Which instance holds which terminal's agent connection. A row is live only while its
-- instance's lease is.
create table agent_presence (
    terminal_id text primary key,
    instance_id text not null,
    connected_at bigint not null
);
create index agent_presence_instance_idx on agent_presence (instance_id);

-- Calls and answers between instances: the notification carries the row's id only; the body
-- (sealed with the instances' shared key: APDU answers hold card data) is read and deleted by
-- its recipient.
create table cluster_message (
    message_id bigserial primary key,
    recipient text not null,
    body bytea not null,
    created_at bigint not null
);
create index cluster_message_created_idx on cluster_message (created_at);

-- Rate limits on arming, reads and typed lookups, when several instances share them: one row per
-- counted event, per key (`arm:terminal:…`, `read:user:…`, …), for as long as its window.
create table rate_event (
    key text not null,
    at bigint not null
);
create index rate_event_key_at_idx on rate_event (key, at);
