-- The sandbox bank's ledger. Applied migrations are never edited; changes are new files.
-- Amounts are integers in minor units; timestamps unix milliseconds.

create table account (
    account_id text primary key,
    kind text not null,
    holder_name text not null,
    currency text not null,
    balance_minor integer not null,
    constraint account_kind_check check (kind in ('customer', 'settlement')),
    constraint account_balance_minor_check check (kind = 'settlement' or balance_minor >= 0)
);

-- A bank card of a customer account, with the phone registered for it.
create table card (
    card_number text primary key,
    account_id text not null references account (account_id),
    phone text not null
);

create table binding (
    binding_token text primary key,
    card_number text not null references card (card_number),
    created_at integer not null,
    revoked_at integer
);

create table transfer (
    idempotency_key text primary key,
    request_hash text not null,
    binding_token text not null,
    from_account_id text,
    to_account text not null,
    amount_minor integer not null,
    currency text not null,
    reference text not null,
    status text not null,
    decline_reason text,
    bank_ref text not null,
    created_at integer not null,
    settled_at integer,
    constraint transfer_status_check check (status in ('completed', 'declined', 'pending')),
    constraint transfer_bank_ref_key unique (bank_ref)
);
create index transfer_created_at_idx on transfer (created_at);

create table refund (
    idempotency_key text primary key,
    request_hash text not null,
    transfer_key text not null references transfer (idempotency_key),
    amount_minor integer not null,
    currency text not null,
    bank_ref text not null,
    created_at integer not null,
    constraint refund_bank_ref_key unique (bank_ref)
);
create index refund_created_at_idx on refund (created_at);
create index refund_transfer_key_idx on refund (transfer_key);

-- Request nonces seen within the signature window: a replayed request is refused, even after a restart.
create table seen_nonce (
    nonce text primary key,
    expires_at integer not null
);
