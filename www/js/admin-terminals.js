// Terminals: the list (`GET /api/admin/terminals`, loaded once and again when the live feed
// reconnects), each row's run state merged in live from `/ws/admin` (`snapshot`,
// `terminal_changed`), searched, filtered and paged in the page. A change made here refreshes only
// its own row (`?terminal_id=`). Pairings are a count with an expander; revoking a terminal or a
// pairing asks first.
import { t } from "/js/i18n.js";
import { api, describe, el, showAlert } from "/js/api.js";
import { actionButton, badge, confirmAction, formatMs, formatUtc, matches, pager, rerender } from "/js/admin-common.js";

const PAGE_SIZE = 50;

const body = document.getElementById("terminals-body");
const empty = document.getElementById("terminals-empty");
const count = document.getElementById("terminals-count");
const error = document.getElementById("terminals-error");
const tabCount = document.getElementById("terminals-tab-count");
const search = document.getElementById("terminal-q");
const stateFilter = document.getElementById("terminal-state");
const readingFilter = document.getElementById("terminal-reading");
const topupFilter = document.getElementById("terminal-topup");

/** terminal_id → `TerminalSummary` from the API. */
const summaries = new Map();
/** terminal_id → `TerminalState` from the live feed (admitted terminals only). */
const live = new Map();
/** Terminals whose pairings are shown. */
const expanded = new Set();
let loaded = false;
let page = 1;
let scheduled = false;
let refetching = null;

const pages = pager(document.getElementById("terminals-pager"), {
  go(delta) {
    page += delta;
    render();
    body.closest("table").scrollIntoView({ block: "nearest" });
  },
});

function online(id) {
  const state = live.get(id);
  return state ? state.online : Boolean(summaries.get(id)?.online);
}

function filtered() {
  const needle = search.value.trim().toLowerCase();
  const state = stateFilter.value;
  const reading = readingFilter.value;
  const topup = topupFilter.value;
  return [...summaries.values()].filter((s) => {
    if (!matches(needle, s.name, s.terminal_id, ...s.pairings.map((p) => p.pairing_id))) return false;
    if (state === "online" && !(online(s.terminal_id) && !s.revoked)) return false;
    if (state === "offline" && (online(s.terminal_id) || s.revoked || !s.enrolled)) return false;
    if (state === "revoked" && !s.revoked) return false;
    if (state === "not_enrolled" && (s.enrolled || s.revoked)) return false;
    if (reading && s.permitted !== (reading === "on")) return false;
    if (topup && Boolean(s.topup_enabled) !== (topup === "on")) return false;
    return true;
  });
}

function stateCell(s) {
  const cell = el("td");
  const state = live.get(s.terminal_id);
  if (s.revoked) {
    cell.append(badge("danger", t("admin.revoked")));
  } else if (!s.enrolled) {
    cell.append(badge("muted", t("admin.not_enrolled")));
  } else if (online(s.terminal_id)) {
    cell.append(badge("ok", t("admin.online")));
  } else {
    cell.append(badge("warn", t("admin.offline")));
  }
  const facts = [];
  if (state?.agent_version) facts.push(t("console.agent_version", { version: state.agent_version }));
  const backend = state?.backend ?? s.backend;
  if (backend) facts.push(`${t("admin.backend")}: ${backend}`);
  // Heartbeats are not pushed (only changes are): a "last seen" here would go stale, so an online
  // terminal shows none; an offline one says since when.
  if (state && !state.online && state.offline_since_ms && !s.revoked) {
    facts.push(t("console.offline_since", { when: formatMs(state.offline_since_ms) }));
  }
  if (state && state.online && state.card_present) facts.push(t("console.card_present"));
  for (const fact of facts) cell.append(el("div", "small muted", fact));
  return cell;
}

function readersCell(s) {
  const cell = el("td");
  const readers = live.get(s.terminal_id)?.readers ?? s.readers;
  if (!readers.length) {
    cell.append(el("span", "muted", t("admin.no_readers")));
    return cell;
  }
  const list = el("ul", "plain");
  for (const reader of readers) {
    list.append(el("li", "", `${reader.name} — ${t("admin.reader_" + reader.state)}`));
  }
  cell.append(list);
  return cell;
}

function policyCell(s) {
  const cell = el("td");
  const policy = live.get(s.terminal_id)?.policy ?? s.policy;
  if (!policy) {
    cell.append(el("span", "muted", t("console.policy_unknown")));
    return cell;
  }
  cell.append(policy.read_only ? badge("info", t("admin.read_only")) : badge("muted", t("admin.read_write")));
  const readers = policy.allowed_readers || [];
  cell.append(el("div", "small muted", readers.length ? `${t("admin.allowed_readers")} ${readers.join(", ")}` : t("admin.all_readers")));
  return cell;
}

/** A switch: a button with role=switch named by `label`, saying on or off; its action flips. */
function switchCell(on, onAction, offAction, label, disabled) {
  const cell = el("td");
  const text = t(on ? "console.switch_on" : "console.switch_off");
  const button = actionButton(on ? offAction : onAction, text, on ? "button button-small switch switch-on" : "button button-small switch");
  button.setAttribute("role", "switch");
  button.setAttribute("aria-checked", String(on));
  button.setAttribute("aria-label", label);
  button.disabled = disabled;
  cell.append(button);
  return cell;
}

function pairingsCell(s) {
  const cell = el("td");
  const active = s.pairings.filter((p) => !p.revoked).length;
  if (s.pairings.length === 0) {
    cell.append(el("span", "muted", t("admin.no_pairings")));
    return cell;
  }
  const open = expanded.has(s.terminal_id);
  const toggle = actionButton("pairings", t("console.pairings_count", { n: s.pairings.length, active }), "button button-small expander");
  toggle.setAttribute("aria-expanded", String(open));
  toggle.setAttribute("aria-controls", `pairings-${s.terminal_id}`);
  cell.append(toggle);
  return cell;
}

function pairingsRow(s) {
  const tr = el("tr", "pairings-row");
  tr.id = `pairings-${s.terminal_id}`;
  tr.dataset.pairingsOf = s.terminal_id;
  const td = el("td");
  td.colSpan = 8;
  const list = el("ul", "pairing-list");
  list.setAttribute("aria-label", t("console.pairings_of", { name: s.name }));
  // Active pairings first, newest first.
  const ordered = [...s.pairings].sort((a, b) => Number(a.revoked) - Number(b.revoked) || b.created_at.localeCompare(a.created_at));
  for (const pairing of ordered) {
    const item = el("li", "pairing");
    item.dataset.pairingId = pairing.pairing_id;
    item.dataset.revoked = String(pairing.revoked);
    item.append(el("code", "", pairing.pairing_id), el("span", "small muted", `${t("admin.paired_at")} ${formatUtc(pairing.created_at)}`));
    if (pairing.revoked) {
      item.append(badge("danger", t("admin.revoked")));
    } else {
      const revoke = actionButton("revoke-pairing", t("admin.revoke_pairing"), "button button-small button-danger", { pairingId: pairing.pairing_id });
      revoke.setAttribute("aria-label", `${t("admin.revoke_pairing")} ${pairing.pairing_id}`);
      item.append(revoke);
    }
    list.append(item);
  }
  td.append(list);
  tr.append(td);
  return tr;
}

function rows(s) {
  const tr = el("tr");
  tr.dataset.terminalId = s.terminal_id;
  tr.dataset.online = String(online(s.terminal_id) && !s.revoked);
  tr.dataset.permitted = String(s.permitted);
  tr.dataset.revoked = String(s.revoked);
  tr.dataset.topupEnabled = String(Boolean(s.topup_enabled));

  const name = el("td");
  name.append(el("strong", "terminal-name", s.name), el("code", "id", s.terminal_id));

  const actions = el("td");
  const revoke = actionButton("revoke", t("admin.revoke"), "button button-small button-danger");
  revoke.setAttribute("aria-label", `${t("admin.revoke")} ${s.name}`);
  revoke.disabled = s.revoked;
  actions.append(revoke);

  tr.append(
    name,
    stateCell(s),
    readersCell(s),
    policyCell(s),
    switchCell(s.permitted, "permit", "forbid", t("console.reading_switch", { name: s.name }), s.revoked),
    switchCell(Boolean(s.topup_enabled), "topup-on", "topup-off", t("console.topup_switch", { name: s.name }), s.revoked),
    pairingsCell(s),
    actions,
  );
  return expanded.has(s.terminal_id) ? [tr, pairingsRow(s)] : [tr];
}

/** Identifies a control across re-renders (a switch keeps its identity when its action flips). */
function controlKey(node) {
  const flips = { forbid: "permit", "topup-off": "topup-on" };
  const action = node.dataset?.action;
  if (!action) return null;
  const row = node.closest("[data-terminal-id], [data-pairings-of]");
  const terminal = row?.dataset.terminalId ?? row?.dataset.pairingsOf;
  return [terminal, flips[action] ?? action, node.dataset.pairingId ?? ""].join("|");
}

/** What a terminal's rows show: when it is the same, the rows are left alone. */
function rowKey(s) {
  return JSON.stringify([s, live.get(s.terminal_id) ?? null, expanded.has(s.terminal_id), document.documentElement.lang]);
}

/** terminal_id → the key its rows on screen were drawn from. */
let drawn = new Map();

/**
 * Draw `slice`: when the same terminals are on screen in the same order, only the rows whose
 * terminal changed are replaced (a live update leaves the rest, and the keyboard focus in them,
 * alone); otherwise the page is drawn again, keeping focus on the same control.
 */
function draw(slice) {
  const same = drawn.size === slice.length && [...drawn.keys()].every((id, i) => slice[i].terminal_id === id);
  const next = new Map(slice.map((s) => [s.terminal_id, rowKey(s)]));
  if (!same) {
    rerender(body, () => slice.flatMap(rows), controlKey);
  } else {
    for (const s of slice) {
      if (drawn.get(s.terminal_id) === next.get(s.terminal_id)) continue;
      const old = [...body.querySelectorAll(`[data-terminal-id="${CSS.escape(s.terminal_id)}"], [data-pairings-of="${CSS.escape(s.terminal_id)}"]`)];
      const active = document.activeElement;
      const focused = active && old.some((node) => node.contains(active)) ? controlKey(active) : null;
      const fresh = rows(s);
      old[0].replaceWith(...fresh);
      for (const node of old.slice(1)) node.remove();
      if (focused) {
        const again = fresh.flatMap((node) => [...node.querySelectorAll("button")]).find((b) => controlKey(b) === focused);
        if (again && !again.disabled) again.focus();
      }
    }
  }
  drawn = next;
}

export function render() {
  scheduled = false;
  if (!loaded) return;
  const shown = filtered();
  const pagesTotal = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
  page = Math.min(Math.max(1, page), pagesTotal);
  draw(shown.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE));
  const total = summaries.size;
  const onlineNow = [...summaries.values()].filter((s) => !s.revoked && online(s.terminal_id)).length;
  count.textContent = t("console.terminals_count", { shown: shown.length, total, online: onlineNow });
  tabCount.textContent = total ? `${onlineNow}/${total - [...summaries.values()].filter((s) => s.revoked).length}` : "";
  tabCount.title = t("console.terminals_tab_title", { online: onlineNow });
  empty.hidden = shown.length > 0;
  empty.textContent = total ? t("console.no_match") : t("admin.no_terminals");
  pages.show({
    hasPrev: page > 1,
    hasNext: page < pagesTotal,
    text: shown.length > PAGE_SIZE ? t("console.page_of", { page, pages: pagesTotal }) : "",
  });
  document.documentElement.dataset.adminLoaded = "true";
}

/** Render once per frame, however many live frames arrive. */
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(render);
}

export async function load() {
  try {
    const list = await api("GET", "/api/admin/terminals");
    summaries.clear();
    for (const s of list) summaries.set(s.terminal_id, s);
    loaded = true;
    showAlert(error, "");
    render();
  } catch (failure) {
    showAlert(error, `${t("admin.load_failed")}: ${describe(failure)}`);
  }
}

/** Fetch one terminal's row again (after a change to it, or a terminal the list does not have). */
async function refetch(terminalId) {
  try {
    const [summary] = await api("GET", `/api/admin/terminals?terminal_id=${encodeURIComponent(terminalId)}`);
    if (summary) summaries.set(terminalId, summary);
    else summaries.delete(terminalId);
    showAlert(error, "");
  } catch (failure) {
    showAlert(error, describe(failure));
  }
  schedule();
}

/** The live feed's snapshot: every admitted terminal's state now. */
export function onSnapshot(states, first) {
  live.clear();
  for (const state of states) live.set(state.terminal_id, state);
  // After a reconnect, what changed while the feed was away (switches, new terminals) is
  // fetched again once.
  if (!first && loaded && !refetching) {
    refetching = load().finally(() => {
      refetching = null;
    });
  }
  for (const state of states) {
    if (loaded && !summaries.has(state.terminal_id)) refetch(state.terminal_id);
  }
  schedule();
}

export function onTerminalChanged(state) {
  live.set(state.terminal_id, state);
  if (loaded && !summaries.has(state.terminal_id)) refetch(state.terminal_id);
  schedule();
}

export function nameOf(terminalId) {
  return summaries.get(terminalId)?.name ?? live.get(terminalId)?.name ?? null;
}

body.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.disabled) return;
  const row = button.closest("[data-terminal-id], [data-pairings-of]");
  const terminalId = row?.dataset.terminalId ?? row?.dataset.pairingsOf;
  const summary = summaries.get(terminalId);
  if (!summary) return;
  const id = encodeURIComponent(terminalId);
  const action = button.dataset.action;
  if (action === "pairings") {
    if (expanded.has(terminalId)) expanded.delete(terminalId);
    else expanded.add(terminalId);
    render();
    return;
  }
  let call;
  switch (action) {
    case "permit":
    case "forbid":
      call = () => api("PUT", `/api/admin/terminals/${id}/permission`, { permitted: action === "permit" });
      break;
    case "topup-on":
    case "topup-off":
      call = () => api("POST", `/api/admin/terminals/${id}/topup`, { enabled: action === "topup-on" });
      break;
    case "revoke": {
      const sure = await confirmAction({
        title: t("console.revoke_terminal_title", { name: summary.name }),
        message: t("console.revoke_terminal_message", { name: summary.name }),
        confirm: t("console.revoke_terminal_confirm"),
      });
      if (!sure) return;
      call = () => api("POST", `/api/admin/terminals/${id}/revoke`);
      break;
    }
    case "revoke-pairing": {
      const pairingId = button.dataset.pairingId;
      const sure = await confirmAction({
        title: t("console.revoke_pairing_title"),
        message: t("console.revoke_pairing_message", { pairing: pairingId, name: summary.name }),
        confirm: t("console.revoke_pairing_confirm"),
      });
      if (!sure) return;
      call = () => api("POST", `/api/admin/pairings/${encodeURIComponent(pairingId)}/revoke`);
      break;
    }
    default:
      return;
  }
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await call();
    showAlert(error, "");
  } catch (failure) {
    showAlert(error, describe(failure));
  }
  await refetch(terminalId);
  render();
  // A row that did not change keeps this button: it works again.
  button.disabled = false;
  button.removeAttribute("aria-busy");
  // A control that went away (a revoked pairing's button) leaves the keyboard on its terminal.
  if (!body.contains(document.activeElement)) {
    const rowNow = body.querySelector(`tr[data-terminal-id="${CSS.escape(terminalId)}"]`);
    (rowNow?.querySelector("button[data-action=pairings]") ?? rowNow?.querySelector("button:not(:disabled)") ?? document.getElementById("panel-terminals")).focus();
  }
});

for (const control of [search, stateFilter, readingFilter, topupFilter]) {
  control.addEventListener("input", () => {
    page = 1;
    render();
  });
}
document.getElementById("terminals-filter").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("terminals-reload").addEventListener("click", load);

// ---------------------------------------------------------------- enrolment

const createForm = document.getElementById("create-form");
const createName = document.getElementById("create-name");
const createError = document.getElementById("create-error");
const created = document.getElementById("created");

createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = createName.value.trim();
  if (!name) {
    createName.focus();
    return;
  }
  showAlert(createError, "");
  try {
    const answer = await api("POST", "/api/admin/terminals", { name });
    const command = `cardbridge-agent enrol --server ${location.origin} --code ${answer.enrolment_code}`;
    document.getElementById("created-code").textContent = answer.enrolment_code;
    document.getElementById("created-expires").textContent = formatUtc(answer.expires_at);
    document.getElementById("created-command").textContent = command;
    created.dataset.terminalId = answer.terminal_id;
    created.hidden = false;
    createName.value = "";
    await refetch(answer.terminal_id);
  } catch (failure) {
    showAlert(createError, describe(failure));
  }
});

document.getElementById("copy-command").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  try {
    await navigator.clipboard.writeText(document.getElementById("created-command").textContent);
    button.textContent = t("admin.copied");
  } catch {
    // No clipboard (e.g. plain http): the command stays selectable on the page.
    const range = document.createRange();
    range.selectNodeContents(document.getElementById("created-command"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
  }
});
