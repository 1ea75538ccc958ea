// The card query form shared by the cardholder page and the branch desk (S400/S500).
//
// The page module fills #card-number and #read-id, then clicks #submit. This script takes the
// submit, posts a QueryRequest to /api/query and renders the QueryResult into #result (marked
// data-result-state="shown"). A number typed by a person carries no read id.
import { t, currentLang, onLangChange } from "/js/i18n.js";
import { api, describe, el, showAlert } from "/js/api.js";

/** Minor units as "1,234.56 CNY" (always two decimals; sign for debits). */
export function formatMoney(minor, currency) {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  const units = Math.trunc(abs / 100).toLocaleString(currentLang() === "zh-CN" ? "zh-CN" : "en-US");
  const cents = String(abs % 100).padStart(2, "0");
  return `${sign}${units}.${cents} ${currency}`;
}

/** The Luhn (mod 10) check over a string of digits. */
function luhnValid(digits) {
  let sum = 0;
  for (let i = 0; i < digits.length; i += 1) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/**
 * What is wrong with a typed card number (an i18n key), or null: the rule of the server's
 * `card::pan::Pan` — 12 to 19 digits passing the Luhn check, except UnionPay numbers (62…, 16 to 19
 * digits), which need not pass it.
 */
export function cardNumberProblem(digits) {
  if (!/^[0-9]+$/.test(digits)) return "query.not_digits";
  if (digits.length < 12 || digits.length > 19) return "query.bad_length";
  const unionPay = digits.startsWith("62") && digits.length >= 16;
  if (!unionPay && !luhnValid(digits)) return "query.bad_check_digit";
  return null;
}

/** "YYMM" as "MM/YY"; anything else as given. */
function formatExpiry(yymm) {
  return /^\d{4}$/.test(yymm) ? `${yymm.slice(2)}/${yymm.slice(0, 2)}` : yymm;
}

function row(list, label, value, id) {
  const dt = el("dt", "", t(label));
  const dd = el("dd", "", value);
  if (id) dd.id = id;
  list.append(dt, dd);
}

function money(minor, currency) {
  const node = el("span", minor < 0 ? "amount amount-debit" : "amount", formatMoney(minor, currency));
  node.dataset.amountMinor = String(minor);
  node.dataset.currency = currency;
  return node;
}

function transactionsTable(transactions) {
  if (transactions.length === 0) {
    return el("p", "muted", t("result.no_transactions"));
  }
  const table = el("table", "data-table transactions");
  table.id = "result-transactions";
  const head = el("tr");
  for (const key of ["result.tx_at", "result.tx_description", "result.tx_amount"]) {
    const th = el("th", key === "result.tx_amount" ? "num" : "", t(key));
    th.scope = "col";
    head.append(th);
  }
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const tx of transactions) {
    const tr = el("tr");
    const amount = el("td", "num");
    amount.append(money(tx.amount_minor, tx.currency));
    tr.append(el("td", "nowrap", tx.at), el("td", "", tx.description), amount);
    body.append(tr);
  }
  table.append(body);
  return table;
}

/** Render a QueryResult; `staff` shows the desk view (every field, as a customer lookup). */
function renderResult(container, result, { staff, readId }) {
  const parts = [];
  parts.push(el("h2", "", t(staff ? "result.customer_lookup" : "result.heading")));

  const full = result.disclosure === "full";
  const badge = el("span", full ? "badge badge-ok" : "badge badge-warn",
    t(full ? "result.disclosure_full" : "result.disclosure_masked"));
  badge.id = "result-disclosure";
  badge.dataset.disclosure = result.disclosure;

  const summary = el("dl", "facts");
  row(summary, "result.card", result.masked_number, "result-masked");
  row(summary, "result.brand", result.brand, "result-brand");
  if (staff) {
    row(summary, "result.request", t("request." + result.request), "result-request");
    row(summary, "result.source", t(readId ? "result.source_read" : "result.source_typed"), "result-source");
  }
  summary.append(el("dt", "", t("result.disclosure")));
  const disclosure = el("dd");
  disclosure.append(badge);
  summary.append(disclosure);
  parts.push(summary);
  if (!full) {
    const reason = result.masked_reason || "not_tapped";
    const note = el("p", "alert alert-info", t("result.masked_" + reason));
    note.id = "result-masked-reason";
    note.dataset.maskedReason = reason;
    parts.push(note);
  }

  let shown = false;
  if (result.balance) {
    shown = true;
    const box = el("div", "balance");
    box.id = "result-balance";
    box.append(el("p", "balance-label", t("result.balance")));
    const amount = el("p", "balance-amount");
    amount.append(money(result.balance.available_minor, result.balance.currency));
    box.append(amount);
    parts.push(box);
  }
  if (result.details) {
    shown = true;
    const d = result.details;
    const details = el("dl", "facts");
    details.id = "result-details";
    row(details, "result.holder", d.holder_name);
    row(details, "result.card_type", d.card_type);
    row(details, "result.issuer", d.issuer);
    row(details, "result.expiry", formatExpiry(d.expiry));
    row(details, "result.status", d.status);
    parts.push(details);
  }
  if (result.transactions) {
    shown = true;
    parts.push(el("h3", "", t("result.transactions")));
    parts.push(transactionsTable(result.transactions));
  }
  if (!shown && full) {
    parts.push(el("p", "muted", t("result.nothing")));
  }
  container.replaceChildren(...parts);
  container.hidden = false;
  container.dataset.resultState = "shown";
  container.dataset.disclosure = result.disclosure;
}

/** Wire the form: `staff` selects the desk view of the result. */
export function setupQueryForm({ staff = false } = {}) {
  const form = document.getElementById("query-form");
  const input = document.getElementById("card-number");
  const readId = document.getElementById("read-id");
  const request = document.getElementById("request");
  const submit = document.getElementById("submit");
  const error = document.getElementById("query-error");
  const result = document.getElementById("result");
  let last = null;
  let inFlight = null;

  // A person typing replaces the number the module read: that number is no longer proven.
  input.addEventListener("input", (event) => {
    if (event.isTrusted) readId.value = "";
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const cardNumber = input.value.replace(/[\s-]/g, "");
    if (!cardNumber) {
      showAlert(error, t("query.missing"));
      input.focus();
      return;
    }
    // A typed number is checked here first; a number the module filled in comes with its read id
    // and is the server's to judge.
    const problem = readId.value ? null : cardNumberProblem(cardNumber);
    if (problem) {
      showAlert(error, t(problem));
      input.focus();
      return;
    }
    const mine = {};
    inFlight = mine; // only the latest submit may render
    const body = { card_number: cardNumber, read_id: readId.value || null, request: request.value };
    showAlert(error, "");
    submit.setAttribute("aria-busy", "true");
    result.dataset.resultState = "loading";
    try {
      const answer = await api("POST", "/api/query", body);
      if (inFlight !== mine) return; // a newer submit took over
      last = { answer, readId: body.read_id };
      renderResult(result, answer, { staff, readId: body.read_id });
    } catch (failure) {
      if (inFlight !== mine) return;
      last = null;
      result.hidden = true;
      result.replaceChildren();
      result.dataset.resultState = "error";
      showAlert(error, describe(failure));
    } finally {
      if (inFlight === mine) {
        submit.removeAttribute("aria-busy");
        inFlight = null;
      }
    }
  });

  onLangChange(() => {
    if (last) renderResult(result, last.answer, { staff, readId: last.readId });
  });
}
