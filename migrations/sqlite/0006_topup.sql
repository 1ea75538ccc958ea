-- Top-ups (DESIGN §4): one row per top-up moving through durable states, and the ledger's
-- double-entry postings written in the same transaction as each state change.
create table topup (
    topup_id text primary key,
    card_serial text not null,
    -- The bank card the money comes from.
    binding_id text not null references bank_binding (binding_id),
    amount_minor integer not null check (amount_minor > 0),
    state text not null,
    -- `failed` / `exception`: why.
    reason text,
    -- `write_sent` / `write_unknown`: what resolves the load (hex, `topup::store` layout).
    pending_load text,
    debited integer not null,
    credited integer not null,
    debit_failures integer not null,
    recovery_failures integer not null,
    refund_failures integer not null,
    write_attempts integer not null,
    pending_since integer,
    created_at integer not null,
    updated_at integer not null,
    -- Optimistic concurrency: every recorded transition bumps it.
    version integer not null,
    -- 1 while the top-up is not in a terminal state.
    open integer not null
);
-- At most one open top-up per card.
create unique index topup_card_open_key on topup (card_serial) where open = 1;

create table ledger_posting (
    posting_id integer primary key autoincrement,
    topup_id text not null references topup (topup_id),
    card_serial text not null,
    account text not null,
    side text not null check (side in ('debit', 'credit')),
    amount_minor integer not null check (amount_minor > 0),
    at integer not null
);
create index ledger_posting_topup_idx on ledger_posting (topup_id);
