// Stored-value cards: search by the serial's last digits, a page at a time (`GET
// /api/admin/purse-cards?q=&page=`), register, block with a reason, unblock. Read on demand only,
// so that a reason being typed survives.
import { t } from "/js/i18n.js";
import { api, describe, el, showAlert } from "/js/api.js";
import { actionButton, badge, pager } from "/js/admin-common.js";

const body = document.getElementById("purse-body");
const empty = document.getElementById("purse-empty");
const error = document.getElementById("purse-error");
const searchForm = document.getElementById("purse-search");
const query = document.getElementById("purse-q");
const addForm = document.getElementById("purse-add");
const addError = document.getElementById("purse-add-error");

// The search, the page (from 1) and its answer.
let purse = { q: "", page: 1, answer: null };

const pages = pager(document.getElementById("purse-pager"), {
  go(delta) {
    purse.page = Math.max(1, purse.page + delta);
    load();
  },
});

function row(card) {
  const tr = el("tr");
  tr.dataset.cardSerial = card.card_serial;
  tr.dataset.status = card.status;

  const serial = el("td");
  serial.append(el("code", "", card.card_serial));
  const bound = el("td", card.bound_card_last4 ? "" : "muted",
    card.bound_card_last4 ? t("console.purse_bound", { last4: card.bound_card_last4 }) : t("console.purse_not_bound"));
  const status = el("td");
  if (card.status === "blocked") {
    status.append(badge("danger", t("console.purse_blocked")));
    if (card.blocked_reason) status.append(el("div", "small muted", card.blocked_reason));
  } else {
    status.append(badge("ok", t("console.purse_active")));
  }

  const actions = el("td");
  const cell = el("div", "cell-action");
  if (card.status === "blocked") {
    cell.append(actionButton("unblock", t("console.purse_unblock")));
  } else {
    const reason = el("input");
    reason.type = "text";
    reason.maxLength = 200;
    reason.dataset.reason = "";
    reason.placeholder = t("console.purse_reason_placeholder");
    reason.setAttribute("aria-label", `${t("console.purse_reason")} (${card.card_serial})`);
    cell.append(reason, actionButton("block", t("console.purse_block"), "button button-small button-danger"));
  }
  actions.append(cell);
  tr.append(serial, el("td", "", card.username), bound, status, actions);
  return tr;
}

export function render() {
  const answer = purse.answer;
  if (!answer) return;
  // Reasons being typed survive a re-render (a language switch).
  const typed = new Map([...body.querySelectorAll("tr")].map((tr) => [tr.dataset.cardSerial, tr.querySelector("input[data-reason]")?.value]));
  body.replaceChildren(...answer.cards.map(row));
  for (const tr of body.querySelectorAll("tr")) {
    const input = tr.querySelector("input[data-reason]");
    if (input && typed.get(tr.dataset.cardSerial)) input.value = typed.get(tr.dataset.cardSerial);
  }
  empty.hidden = answer.cards.length > 0;
  pages.show({ hasPrev: answer.page > 1, hasNext: answer.has_more, text: answer.page > 1 || answer.has_more ? t("console.page", { page: answer.page }) : "" });
}

async function load() {
  const params = new URLSearchParams({ page: String(purse.page) });
  if (purse.q) params.set("q", purse.q);
  try {
    purse.answer = await api("GET", `/api/admin/purse-cards?${params}`);
    render();
    showAlert(error, "");
    document.documentElement.dataset.purseLoaded = "true";
  } catch (failure) {
    showAlert(error, describe(failure));
  }
}

searchForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = query.value.trim();
  if (!/^[0-9A-Fa-f]{0,16}$/.test(q)) {
    showAlert(error, t("console.purse_search_invalid"));
    query.focus();
    return;
  }
  purse = { q, page: 1, answer: purse.answer };
  await load();
});

body.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.disabled) return;
  const tr = button.closest("tr");
  const serial = encodeURIComponent(tr?.dataset.cardSerial || "");
  let call;
  if (button.dataset.action === "block") {
    const input = tr.querySelector("input[data-reason]");
    const reason = input.value.trim();
    if (!reason) {
      showAlert(error, t("console.purse_reason_missing"));
      input.focus();
      return;
    }
    call = () => api("POST", `/api/admin/purse-cards/${serial}/block`, { reason });
  } else if (button.dataset.action === "unblock") {
    call = () => api("POST", `/api/admin/purse-cards/${serial}/unblock`);
  } else {
    return;
  }
  button.disabled = true;
  try {
    await call();
    showAlert(error, "");
    await load();
    body.querySelector(`tr[data-card-serial="${tr.dataset.cardSerial}"] button[data-action]`)?.focus();
  } catch (failure) {
    showAlert(error, describe(failure));
    button.disabled = false;
  }
});

addForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const serialInput = document.getElementById("purse-add-serial");
  const userInput = document.getElementById("purse-add-user");
  const cardSerial = serialInput.value.trim();
  const username = userInput.value.trim();
  if (!/^[0-9A-Fa-f]{16}$/.test(cardSerial)) {
    serialInput.focus();
    return;
  }
  if (!username) {
    userInput.focus();
    return;
  }
  showAlert(addError, "");
  try {
    const card = await api("POST", "/api/admin/purse-cards", { card_serial: cardSerial, username });
    serialInput.value = "";
    userInput.value = "";
    // Show the new card: search for it.
    query.value = card.card_serial;
    purse = { q: card.card_serial, page: 1, answer: purse.answer };
    await load();
  } catch (failure) {
    showAlert(addError, describe(failure));
  }
});

let started = false;

/** The tab was opened. */
export function shown(isShown) {
  if (!isShown || started) return;
  started = true;
  load();
}
