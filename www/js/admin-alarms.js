// Alarms: the list (`GET /api/admin/alarms?state=open|all&page=`, server paging) kept current by
// the live feed (an alarm raised appears at the top of the first page, an acknowledgement or a
// clearing changes its row in place), filtered by kind and text in the page; acknowledging
// (`POST /api/admin/alarms/{id}/ack`); the run state now (`GET /api/admin/monitor`) above it, with
// the demo's bank plug (`/api/admin/demo/bank`) where the server has an in-process demo bank.
import { t, currentLang } from "/js/i18n.js";
import { api, describe, el, showAlert } from "/js/api.js";
import { actionButton, announce, badge, formatMs, matches, pager, rerender } from "/js/admin-common.js";
import { nameOf } from "/js/admin-terminals.js";

export const KINDS = [
  "terminal_offline", "bank_link_down", "bank_error_ratio", "topup_exception", "topup_stuck",
  "reconciliation_mismatch", "settlement_failed", "audit_chain_failed", "task_failed",
];

const body = document.getElementById("alarms-body");
const empty = document.getElementById("alarms-empty");
const error = document.getElementById("alarms-error");
const tabCount = document.getElementById("alarms-tab-count");
const stateFilter = document.getElementById("alarm-state");
const kindFilter = document.getElementById("alarm-kind");
const search = document.getElementById("alarm-q");
const figures = document.getElementById("run-state-figures");

/** alarm_id → `Alarm`, the open ones, as the live feed says. */
const open = new Map();
/** The list on screen: the server's page of the chosen filter. */
let view = { filter: "open", page: 1, alarms: null, hasMore: false };
let monitorTimer = null;
let visible = false;

const pages = pager(document.getElementById("alarms-pager"), {
  go(delta) {
    view.page = Math.max(1, view.page + delta);
    load();
  },
});

let kindsIn = null;

/** The kind filter's options, in the page's language (rebuilt only when it changes). */
function kindOptions() {
  if (kindsIn === currentLang()) return;
  kindsIn = currentLang();
  const chosen = kindFilter.value;
  kindFilter.replaceChildren(el("option", "", t("console.all")));
  kindFilter.firstChild.value = "";
  for (const kind of KINDS) {
    const option = el("option", "", t(`console.alarm.${kind}`));
    option.value = kind;
    kindFilter.append(option);
  }
  kindFilter.value = chosen;
}

function subject(alarm) {
  const cell = el("td");
  const name = alarm.kind === "terminal_offline" ? nameOf(alarm.subject) : null;
  if (name) cell.append(el("strong", "terminal-name", name));
  cell.append(el("code", name ? "id" : "", alarm.subject));
  return cell;
}

function stateCell(alarm) {
  const cell = el("td");
  const kinds = { raised: "danger", acknowledged: "warn", cleared: "ok" };
  cell.append(badge(kinds[alarm.state] || "muted", t(`console.alarm_state.${alarm.state}`)));
  if (alarm.acked_by) {
    cell.append(el("div", "small muted", t("console.acked_by", { who: alarm.acked_by, when: formatMs(alarm.acked_at_ms) })));
  }
  if (alarm.cleared_at_ms) {
    cell.append(el("div", "small muted", t("console.cleared_at", { when: formatMs(alarm.cleared_at_ms) })));
  }
  return cell;
}

function row(alarm) {
  const tr = el("tr");
  tr.dataset.alarmId = alarm.alarm_id;
  tr.dataset.kind = alarm.kind;
  tr.dataset.state = alarm.state;
  const actions = el("td");
  if (alarm.state === "raised") {
    const ack = actionButton("ack", t("console.ack"), "button button-small button-primary");
    ack.setAttribute("aria-label", `${t("console.ack")}: ${t(`console.alarm.${alarm.kind}`)} ${alarm.subject}`);
    actions.append(ack);
  }
  tr.append(
    el("td", "nowrap", formatMs(alarm.raised_at_ms)),
    el("td", "", t(`console.alarm.${alarm.kind}`)),
    subject(alarm),
    el("td", "detail", alarm.detail),
    stateCell(alarm),
    actions,
  );
  return tr;
}

export function render() {
  kindOptions();
  renderDemoBank();
  const raised = [...open.values()].filter((a) => a.state === "raised").length;
  tabCount.hidden = raised === 0;
  tabCount.textContent = String(raised);
  tabCount.title = t("console.alarms_tab_title", { n: raised, open: open.size });
  if (!view.alarms) return;
  const needle = search.value.trim().toLowerCase();
  const kind = kindFilter.value;
  const shown = view.alarms.filter((a) => (!kind || a.kind === kind) && matches(needle, a.subject, a.detail, nameOf(a.subject), t(`console.alarm.${a.kind}`)));
  rerender(body, () => shown.map(row), (node) => node.dataset?.action && `${node.closest("tr")?.dataset.alarmId}|${node.dataset.action}`);
  empty.hidden = shown.length > 0;
  empty.textContent = view.alarms.length ? t("console.no_match") : t(view.filter === "open" ? "console.no_open_alarms" : "console.no_alarms");
  pages.show({ hasPrev: view.page > 1, hasNext: view.hasMore, text: view.page > 1 || view.hasMore ? t("console.page", { page: view.page }) : "" });
  document.documentElement.dataset.alarmsLoaded = "true";
}

export async function load() {
  const filter = stateFilter.value;
  try {
    const answer = await api("GET", `/api/admin/alarms?state=${encodeURIComponent(filter)}&page=${view.page}`);
    view = { filter, page: answer.page, alarms: answer.alarms, hasMore: answer.has_more };
    showAlert(error, "");
    render();
  } catch (failure) {
    showAlert(error, describe(failure));
  }
}

/** Put `alarm` into the list on screen: its row changes, or a new one goes on top of page 1. */
function upsert(alarm, isNew) {
  if (alarm.state === "cleared") open.delete(alarm.alarm_id);
  else open.set(alarm.alarm_id, alarm);
  if (!view.alarms) return;
  const at = view.alarms.findIndex((a) => a.alarm_id === alarm.alarm_id);
  if (at >= 0) view.alarms[at] = alarm;
  else if (isNew && view.page === 1) view.alarms.unshift(alarm);
}

export function onSnapshot(alarms) {
  open.clear();
  for (const alarm of alarms) open.set(alarm.alarm_id, alarm);
  // What was raised, acknowledged or cleared while the feed was away: the page is read again.
  if (view.alarms) load();
  render();
  refreshMonitorSoon();
}

/** `alarm_raised`, `alarm_acked` or `alarm_cleared` from the live feed. */
export function onAlarm(type, alarm) {
  upsert(alarm, type === "alarm_raised");
  if (type === "alarm_raised") {
    announce(t("console.alarm_announce", { kind: t(`console.alarm.${alarm.kind}`), subject: nameOf(alarm.subject) ?? alarm.subject }));
  }
  render();
  refreshMonitorSoon();
}

/** The open alarms of `kind` (the audit section asks about `audit_chain_failed`). */
export function openOfKind(kind) {
  return [...open.values()].filter((a) => a.kind === kind);
}

body.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action=ack]");
  if (!button || button.disabled) return;
  const id = button.closest("tr").dataset.alarmId;
  button.disabled = true;
  try {
    const alarm = await api("POST", `/api/admin/alarms/${encodeURIComponent(id)}/ack`);
    upsert(alarm, false);
    showAlert(error, "");
    render();
    // The acknowledged row has no button any more: the keyboard goes on to the next one.
    if (!body.contains(document.activeElement)) {
      (body.querySelector("button[data-action=ack]") ?? document.getElementById("panel-alarms")).focus();
    }
  } catch (failure) {
    showAlert(error, describe(failure));
    button.disabled = false;
  }
});

stateFilter.addEventListener("change", () => {
  view.page = 1;
  load();
});
kindFilter.addEventListener("change", render);
search.addEventListener("input", render);
document.getElementById("alarms-filter").addEventListener("submit", (event) => event.preventDefault());

// ---------------------------------------------------------------- the run state now

function figure(label, value, kind) {
  const wrap = el("div", "figure");
  const dd = el("dd");
  if (kind) dd.append(badge(kind, value));
  else dd.textContent = value;
  wrap.append(el("dt", "", label), dd);
  return wrap;
}

function ms(value) {
  return value === null || value === undefined ? "—" : `${value} ms`;
}

async function loadMonitor() {
  try {
    const view = await api("GET", "/api/admin/monitor");
    const bank = view.bank;
    const onlineNow = view.terminals.filter((s) => s.online).length;
    const bankState = !bank.configured ? [t("console.bank_none"), "muted"] : bank.up ? [t("console.bank_up"), "ok"] : [t("console.bank_down"), "danger"];
    figures.replaceChildren(
      figure(t("console.fig_terminals"), t("console.fig_terminals_value", { online: onlineNow, total: view.terminals.length })),
      figure(t("console.fig_bank"), bankState[0], bankState[1]),
      figure(t("console.fig_bank_calls"), bank.configured
        ? t("console.fig_bank_calls_value", { calls: bank.calls, errors: bank.errors, ratio: (bank.error_ratio * 100).toFixed(1), minutes: Math.round(bank.window_ms / 60000) })
        : "—"),
      figure(t("console.fig_bank_latency"), bank.configured ? `${ms(bank.mean_latency_ms)} / ${ms(bank.max_latency_ms)}` : "—"),
      figure(t("console.fig_connected"), t("console.fig_connected_value", { agents: view.hub.connected_agents, pages: view.hub.connected_pages, kiosks: view.hub.connected_kiosks })),
      figure(t("console.fig_commands"), t("console.fig_commands_value", { sent: view.hub.commands_sent, errors: view.hub.command_errors })),
      figure(t("console.fig_alarms"), String(view.open_alarms), view.open_alarms ? "danger" : "ok"),
    );
    figures.dataset.at = String(view.at_ms);
  } catch (failure) {
    showAlert(error, describe(failure));
  }
}

/** After a change the figures are read again, at most once a second and only while shown. */
function refreshMonitorSoon() {
  if (!visible || monitorTimer) return;
  monitorTimer = setTimeout(() => {
    monitorTimer = null;
    loadMonitor();
  }, 1000);
}

document.getElementById("run-state-reload").addEventListener("click", loadMonitor);

// ---------------------------------------------------------------- the demo bank's plug

const demoBank = document.getElementById("demo-bank");
const demoBankNote = document.getElementById("demo-bank-note");
/** `true`/`false` while the server has a demo bank; `null` when it has none (404). */
let demoRunning = null;

function renderDemoBank() {
  demoBank.hidden = demoBankNote.hidden = demoRunning === null;
  if (demoRunning === null) return;
  demoBank.textContent = t(demoRunning ? "console.demo_bank_running" : "console.demo_bank_unplugged");
  demoBank.setAttribute("aria-checked", String(demoRunning));
  demoBank.classList.toggle("switch-on", demoRunning);
  demoBank.dataset.running = String(demoRunning);
}

async function loadDemoBank() {
  try {
    demoRunning = (await api("GET", "/api/admin/demo/bank")).running;
  } catch {
    // 404: not a demo server (or no demo bank): no plug to show.
    demoRunning = null;
  }
  renderDemoBank();
}

demoBank.addEventListener("click", async () => {
  if (demoRunning === null) return;
  demoBank.disabled = true;
  try {
    demoRunning = (await api("POST", "/api/admin/demo/bank", { running: !demoRunning })).running;
    showAlert(error, "");
  } catch (failure) {
    showAlert(error, describe(failure));
  } finally {
    demoBank.disabled = false;
  }
  renderDemoBank();
  refreshMonitorSoon();
});

/** The tab was opened (`true`) or left. */
export function shown(isShown) {
  visible = isShown;
  if (isShown) {
    if (!view.alarms) load();
    loadMonitor();
    loadDemoBank();
  }
}
