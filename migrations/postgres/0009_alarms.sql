-- Run-state monitoring (R3.8): every alarm raised, who acknowledged it, when it cleared. Stands
-- alone (no reference to tables of other migrations), so it applies after an 0008 whatever that
-- one holds.

create table alarm (
    alarm_id text primary key,
    -- `terminal_offline`, `bank_link_down`, … (`protocol::admin::AlarmKind`).
    kind text not null,
    -- A terminal id, a top-up id, `bank`, a business day, a task name.
    subject text not null,
    detail text not null,
    raised_at bigint not null,
    acked_at bigint,
    -- The user name of the admin who acknowledged it.
    acked_by text,
    cleared_at bigint,
    -- 1 until cleared.
    open bigint not null default 1,
    constraint alarm_open_check check (open in (0, 1)),
    constraint alarm_ack_check check ((acked_at is null) = (acked_by is null))
);
-- At most one open alarm per condition and subject: raising it again is a no-op.
create unique index alarm_kind_subject_open_key on alarm (kind, subject) where open = 1;
create index alarm_raised_idx on alarm (raised_at);
