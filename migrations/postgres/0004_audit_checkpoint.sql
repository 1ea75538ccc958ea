-- Signed checkpoints of the audit log's head: the number of events and the hash of the last one,
-- signed with the server key, so that deleting the newest events is detectable (`audit-verify`).
-- Timestamps are unix milliseconds; hashes, signatures and keys are lower-case hex.

create table audit_checkpoint (
    audit_checkpoint_id bigint generated always as identity primary key,
    event_count bigint not null,
    head_hash text not null,
    at bigint not null,
    signature text not null,
    public_key text not null,
    constraint audit_checkpoint_event_count_check check (event_count > 0)
);
