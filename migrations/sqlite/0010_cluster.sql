-- Running as N instances on one database (issue: scale-out). SQLite serves one instance (the
-- server refuses to start a second one on the same file); the tables exist here too so that both
-- dialects describe the same schema, and "allow once" consents are used on both.

create table consent_once (
    session_hash text not null,
    terminal_id text not null,
    created_at integer not null,
    primary key (session_hash, terminal_id)
);

create table cluster_instance (
    instance_id text primary key,
    started_at integer not null,
    lease_until integer not null,
    listen text not null
);

create table agent_presence (
    terminal_id text primary key,
    instance_id text not null,
    connected_at integer not null
);
create index agent_presence_instance_idx on agent_presence (instance_id);

create table cluster_message (
    message_id integer primary key autoincrement,
    recipient text not null,
    body blob not null,
    created_at integer not null
);
create index cluster_message_created_idx on cluster_message (created_at);

-- Rate limits on arming, reads and typed lookups, when several instances share them: one row per
-- counted event, per key (`arm:terminal:…`, `read:user:…`, …), for as long as its window.
create table rate_event (
    key text not null,
    at integer not null
);
create index rate_event_key_at_idx on rate_event (key, at);
