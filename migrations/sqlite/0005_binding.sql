-- Bank cards bound to a cardholder for self-service top-up (R3.5). No full card number: a keyed
-- hash for lookup, the last four digits for display, and the bank's binding token.
create table bank_binding (
    binding_id text primary key,
    user_id text not null references app_user (user_id),
    card_hash text not null,
    last4 text not null,
    bank_token text not null,
    created_at integer not null,
    removed_at integer
);
create unique index bank_binding_user_card_key on bank_binding (user_id, card_hash) where removed_at is null;

-- A binding being confirmed by a one-time code sent to the phone the bank has for the card. The
-- bank binding is created first (the bank checks card and phone); it becomes ours only when the
-- right code comes back, and is deleted at the bank when the request fails or expires.
create table binding_request (
    request_id text primary key,
    user_id text not null references app_user (user_id),
    card_hash text not null,
    last4 text not null,
    bank_token text not null,
    phone_masked text not null,
    -- Kept only while the request is open (a resend needs it), cleared when it ends.
    phone text not null,
    code_hash text not null,
    attempts integer not null default 0,
    created_at integer not null,
    code_expires_at integer not null,
    ended_at integer,
    outcome text
);
create index binding_request_card_idx on binding_request (card_hash, created_at);

-- Every code sent, per card: at most 5 an hour (resends included).
create table binding_code_send (
    card_hash text not null,
    request_id text not null references binding_request (request_id),
    sent_at integer not null
);
create index binding_code_send_card_idx on binding_code_send (card_hash, sent_at);

-- The demo and test SMS gateway: messages kept for admins and tests to read.
create table sms_outbox (
    message_id text primary key,
    phone text not null,
    body text not null,
    sent_at integer not null
);
