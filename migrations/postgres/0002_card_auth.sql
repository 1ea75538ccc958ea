-- A card read proves a card only when the card computed an application cryptogram over the
-- server's unpredictable number and the issuer key verified it (1); otherwise (0) it unlocks the
-- masked summary only.
alter table card_read add column authenticated bigint not null default 0;
