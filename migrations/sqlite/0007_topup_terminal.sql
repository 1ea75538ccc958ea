-- The top-up at a terminal (R1–R3.4): which terminals may top up, which stored-value cards the
-- issuer knows, where each top-up was made and the card's proof of it.

-- An admin switches top-up on per terminal (R3.3: only admitted readers).
alter table terminal add column topup_enabled integer not null default 0;

-- Stored-value cards the issuer knows (R3.3): only these are admitted. The holder is a
-- cardholder account; the bank card it is topped up from is its binding (R3.5).
create table purse_card (
    card_serial text primary key,
    user_id text not null references app_user (user_id),
    binding_id text references bank_binding (binding_id),
    -- 'active' or 'blocked'.
    status text not null,
    blocked_reason text,
    created_at integer not null,
    updated_at integer not null,
    constraint purse_card_status_check check (status in ('active', 'blocked'))
);
create index purse_card_user_idx on purse_card (user_id);

-- Where a top-up was asked for, and the card's proof once completed.
alter table topup add column terminal_id text;
alter table topup add column new_balance integer;
alter table topup add column tac text;
create index topup_card_created_idx on topup (card_serial, created_at);
create index topup_binding_created_idx on topup (binding_id, created_at);
