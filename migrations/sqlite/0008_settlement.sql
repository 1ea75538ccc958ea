-- Daily settlement and reconciliation (R3.7): each run over a business day is a revision of that
-- day's report, kept for good; a re-run with the same result adds nothing, a different result
-- (a late correction) adds the next revision. Every top-up of the day is one item in exactly one
-- class, and so is every bank movement that belongs to no top-up.

-- The load a completed top-up's TAC covers (hex, the `pending_load` layout), kept at completion
-- so that reconciliation can verify the card's proof.
alter table topup add column load_proof text;
create index topup_created_idx on topup (created_at);

create table settlement (
    settlement_id text primary key,
    -- yyyy-mm-dd, the business day in `time_zone` that ends at `cutoff`.
    business_date text not null,
    revision integer not null,
    -- SHA-256 over the day's window and items: equal digests, same report.
    digest text not null,
    time_zone text not null,
    cutoff text not null,
    window_start integer not null,
    window_end integer not null,
    currency text not null,
    n_items integer not null,
    n_mismatches integer not null,
    created_at integer not null,
    created_by text not null,
    constraint settlement_revision_key unique (business_date, revision),
    constraint settlement_revision_check check (revision >= 1)
);

create table settlement_item (
    settlement_id text not null,
    item_no integer not null,
    class text not null,
    reason text not null,
    -- The top-up, or null for a bank movement that belongs to none.
    topup_id text,
    -- The bank's idempotency key of the movement, when the statement has one.
    bank_key text,
    terminal_id text,
    -- The stored-value card, masked: no full serial in a report.
    card_masked text,
    state text,
    amount_minor integer not null,
    ledger_debit_minor integer not null,
    bank_debit_minor integer not null,
    ledger_refund_minor integer not null,
    bank_refund_minor integer not null,
    bank_lines integer not null,
    at integer not null,
    constraint settlement_item_pkey primary key (settlement_id, item_no),
    constraint settlement_item_settlement_fkey foreign key (settlement_id) references settlement (settlement_id),
    constraint settlement_item_class_check check (class in ('matched', 'bank_only', 'ledger_only', 'card_unconfirmed', 'amount_mismatch'))
);
create index settlement_item_topup_idx on settlement_item (topup_id);
