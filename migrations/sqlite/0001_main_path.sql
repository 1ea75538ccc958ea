-- The main path: users, sessions, terminals, enrolment, pairing, consent, card reads,
-- the bank-card data the data service answers from, and the hash-chained audit log.
-- Timestamps are unix milliseconds; flags are 0/1 integers.

create table app_user (
    user_id text primary key,
    username text not null,
    password_hash text not null,
    role text not null,
    created_at integer not null,
    constraint app_user_username_key unique (username),
    constraint app_user_role_check check (role in ('cardholder', 'staff', 'admin'))
);

create table session (
    session_id text primary key,          -- sha256 of the cookie token, hex
    user_id text not null references app_user (user_id),
    created_at integer not null,
    expires_at integer not null
);
create index session_user_idx on session (user_id);

create table terminal (
    terminal_id text primary key,
    name text not null,
    permitted integer not null default 1,
    public_key text,                      -- hex Ed25519 key, set at enrolment
    created_at integer not null,
    enrolled_at integer,
    revoked_at integer,
    constraint terminal_name_key unique (name)
);

create table enrolment_code (
    code_hash text primary key,
    terminal_id text not null references terminal (terminal_id),
    created_at integer not null,
    expires_at integer not null,
    used_at integer
);

create table pairing_token (
    token_hash text primary key,
    terminal_id text not null references terminal (terminal_id),
    expires_at integer not null,
    used_at integer
);

create table browser_pairing (
    pairing_id text primary key,
    binding_hash text not null,
    terminal_id text not null references terminal (terminal_id),
    created_at integer not null,
    revoked_at integer,
    constraint browser_pairing_binding_key unique (binding_hash)
);

create table consent (
    user_id text not null references app_user (user_id),
    terminal_id text not null references terminal (terminal_id),
    decision text not null,
    decided_at integer not null,
    primary key (user_id, terminal_id),
    constraint consent_decision_check check (decision in ('always', 'deny'))
);

create table card_read (
    read_id text primary key,
    terminal_id text not null references terminal (terminal_id),
    user_id text not null references app_user (user_id),
    pan_hash text not null,
    last4 text not null,
    kind text not null,
    created_at integer not null,
    expires_at integer not null,
    used_at integer
);

create table bank_card (
    bank_card_id text primary key,
    pan_hash text not null,
    first6 text not null,
    last4 text not null,
    brand text not null,
    card_type text not null,
    issuer text not null,
    holder_name text not null,
    expiry text not null,
    status text not null,
    owner_user_id text references app_user (user_id),
    currency text not null,
    available_minor integer not null,
    constraint bank_card_pan_hash_key unique (pan_hash)
);

create table card_transaction (
    card_transaction_id integer primary key autoincrement,
    bank_card_id text not null references bank_card (bank_card_id),
    at integer not null,
    description text not null,
    amount_minor integer not null
);
create index card_transaction_card_idx on card_transaction (bank_card_id, at);

create table audit_event (
    audit_id integer primary key autoincrement,
    at integer not null,
    actor text not null,
    action text not null,
    subject text not null,
    detail text not null,
    prev_hash text not null,
    hash text not null
);
