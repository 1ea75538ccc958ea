// Top-ups: those in `exception` with the decisions the engine allows (`POST
// /api/admin/topups/{id}/decision`), read again when the live feed raises or clears a top-up
// alarm; and every top-up by state (`GET /api/admin/topups?state=&page=`, 50 a page from 0),
// searched within the page.
import { t } from "/js/i18n.js";
import { api, describe, el, showAlert } from "/js/api.js";
import { actionButton, badge, formatUtc, matches, pager, rerender, yuan } from "/js/admin-common.js";
import { nameOf } from "/js/admin-terminals.js";

const PAGE_SIZE = 50;
export const STATES = [
  "initiated", "debit_sent", "debit_unknown", "debit_confirmed", "write_sent", "write_unknown",
  "write_pending", "refund_sent", "completed", "failed", "refunded", "exception",
];

const exceptionsBody = document.getElementById("exceptions-body");
const exceptionsEmpty = document.getElementById("exceptions-empty");
const exceptionsError = document.getElementById("exceptions-error");
const tabCount = document.getElementById("topups-tab-count");
const topupsBody = document.getElementById("topups-body");
const topupsEmpty = document.getElementById("topups-empty");
const topupsError = document.getElementById("topups-error");
const stateFilter = document.getElementById("topup-state");
const search = document.getElementById("topup-q");

let exceptions = { page: 0, rows: null };
let topups = { page: 0, rows: null };

const exceptionPages = pager(document.getElementById("exceptions-pager"), {
  go(delta) {
    exceptions.page = Math.max(0, exceptions.page + delta);
    loadExceptions();
  },
});
const topupPages = pager(document.getElementById("topups-pager"), {
  go(delta) {
    topups.page = Math.max(0, topups.page + delta);
    loadTopups();
  },
});

function stateBadge(state) {
  const kinds = { completed: "ok", refunded: "info", failed: "muted", exception: "danger", debit_unknown: "warn", write_unknown: "warn" };
  return badge(kinds[state] || "muted", t(`console.topup_state.${state}`));
}

function reasonText(reason) {
  return reason ? t(`console.topup_reason.${reason}`) : "";
}

function terminalCell(terminalId) {
  const cell = el("td");
  if (!terminalId) {
    cell.append(el("span", "muted", "—"));
    return cell;
  }
  const name = nameOf(terminalId);
  if (name) cell.append(el("span", "terminal-name", name));
  cell.append(el("code", name ? "id" : "", terminalId));
  return cell;
}

function exceptionRow(topup) {
  const tr = el("tr");
  tr.dataset.topupId = topup.topup_id;
  const id = el("td");
  id.append(el("code", "", topup.topup_id), el("div", "small muted", formatUtc(topup.created_at)));
  const actions = el("td");
  const cell = el("div", "cell-action");
  for (const decision of topup.decisions) {
    cell.append(actionButton("decide", t(`console.decision.${decision}`), "button button-small", { decision }));
  }
  actions.append(cell);
  tr.append(id, el("td", "", topup.card_masked), el("td", "amount", yuan(topup.amount_minor)), el("td", "", reasonText(topup.reason)), actions);
  return tr;
}

function topupRow(topup) {
  const tr = el("tr");
  tr.dataset.topupId = topup.topup_id;
  tr.dataset.state = topup.state;
  const state = el("td");
  state.append(stateBadge(topup.state));
  if (topup.reason) state.append(el("div", "small muted", reasonText(topup.reason)));
  const id = el("td");
  id.append(el("code", "", topup.topup_id));
  tr.append(el("td", "nowrap", formatUtc(topup.created_at)), id, el("td", "", topup.card_masked), el("td", "amount", yuan(topup.amount_minor)), state, terminalCell(topup.terminal_id));
  return tr;
}

export function render() {
  if (exceptions.rows) {
    rerender(exceptionsBody, () => exceptions.rows.map(exceptionRow), (node) => node.dataset?.decision && `${node.closest("tr")?.dataset.topupId}|${node.dataset.decision}`);
    exceptionsEmpty.hidden = exceptions.rows.length > 0;
    const more = exceptions.rows.length === PAGE_SIZE;
    exceptionPages.show({ hasPrev: exceptions.page > 0, hasNext: more, text: exceptions.page > 0 || more ? t("console.page", { page: exceptions.page + 1 }) : "" });
    // The tab says how many wait for a person (at least, past the first page).
    tabCount.hidden = exceptions.page !== 0 || exceptions.rows.length === 0;
    tabCount.textContent = more ? `${PAGE_SIZE}+` : String(exceptions.rows.length);
    tabCount.title = t("console.topups_tab_title");
  }
  if (topups.rows) {
    const needle = search.value.trim().toLowerCase();
    const shown = topups.rows.filter((r) => matches(needle, r.topup_id, r.card_masked, r.terminal_id, nameOf(r.terminal_id)));
    topupsBody.replaceChildren(...shown.map(topupRow));
    topupsEmpty.hidden = shown.length > 0;
    topupsEmpty.textContent = topups.rows.length ? t("console.no_match") : t("console.topups_empty");
    const more = topups.rows.length === PAGE_SIZE;
    topupPages.show({ hasPrev: topups.page > 0, hasNext: more, text: topups.page > 0 || more ? t("console.page", { page: topups.page + 1 }) : "" });
  }
  stateOptions();
}

let statesIn = null;

function stateOptions() {
  const lang = document.documentElement.lang;
  if (statesIn === lang) return;
  statesIn = lang;
  const chosen = stateFilter.value;
  const all = el("option", "", t("console.all"));
  all.value = "";
  stateFilter.replaceChildren(all, ...STATES.map((state) => {
    const option = el("option", "", t(`console.topup_state.${state}`));
    option.value = state;
    return option;
  }));
  stateFilter.value = chosen;
}

export async function loadExceptions() {
  try {
    const rows = await api("GET", `/api/admin/topups?state=exception&page=${exceptions.page}`);
    exceptions = { page: exceptions.page, rows };
    showAlert(exceptionsError, "");
    render();
  } catch (failure) {
    showAlert(exceptionsError, describe(failure));
  }
}

async function loadTopups() {
  const query = new URLSearchParams({ page: String(topups.page) });
  if (stateFilter.value) query.set("state", stateFilter.value);
  try {
    const rows = await api("GET", `/api/admin/topups?${query}`);
    topups = { page: topups.page, rows };
    showAlert(topupsError, "");
    render();
  } catch (failure) {
    showAlert(topupsError, describe(failure));
  }
}

/** A top-up alarm came or went: what needs a person may have changed. */
export function onAlarm(alarm) {
  if (alarm.kind === "topup_exception" || alarm.kind === "topup_stuck") {
    loadExceptions();
    if (topups.rows) loadTopups();
  }
}

exceptionsBody.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-decision]");
  if (!button || button.disabled) return;
  const id = button.closest("tr").dataset.topupId;
  for (const other of button.closest("tr").querySelectorAll("button")) other.disabled = true;
  try {
    await api("POST", `/api/admin/topups/${encodeURIComponent(id)}/decision`, { decision: button.dataset.decision });
    showAlert(exceptionsError, "");
  } catch (failure) {
    showAlert(exceptionsError, describe(failure));
  }
  await loadExceptions();
  if (topups.rows) await loadTopups();
  if (!exceptionsBody.contains(document.activeElement)) document.getElementById("exceptions-reload").focus();
});

document.getElementById("exceptions-reload").addEventListener("click", loadExceptions);
document.getElementById("topups-reload").addEventListener("click", loadTopups);
stateFilter.addEventListener("change", () => {
  topups.page = 0;
  loadTopups();
});
search.addEventListener("input", render);
document.getElementById("topups-filter").addEventListener("submit", (event) => event.preventDefault());

let started = false;

/** The tab was opened. */
export function shown(isShown) {
  if (!isShown || started) return;
  started = true;
  stateOptions();
  loadTopups();
}
