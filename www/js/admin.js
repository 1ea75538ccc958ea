// Administration: the terminals (refreshed every 2 s) with their permission switch, revocation of
// terminals and browser pairings, enrolment of new terminals, and the audit log: the newest page
// refreshed with the terminals, older pages on request.
import { t, onLangChange } from "/js/i18n.js";
import { api, describe, el, showAlert } from "/js/api.js";
import { loadSession } from "/js/session.js";

const REFRESH_MS = 2000;
const AUDIT_PAGE = 50;

const terminalsBody = document.getElementById("terminals-body");
const terminalsEmpty = document.getElementById("terminals-empty");
const updated = document.getElementById("terminals-updated");
const adminError = document.getElementById("admin-error");
const auditBody = document.getElementById("audit-body");
const auditEmpty = document.getElementById("audit-empty");
const auditOlder = document.getElementById("audit-older");
const createForm = document.getElementById("create-form");
const createName = document.getElementById("create-name");
const createError = document.getElementById("create-error");
const created = document.getElementById("created");

let terminals = null;
// The audit rows shown, newest first, and the cursor of the next older page (null: none).
let audit = null;
let auditCursor = null;
// Older pages loaded with the button stay across refreshes while they join up with the newest page.
let auditExpanded = false;
let auditGeneration = 0;
let shownTerminals = "";
let shownAudit = "";
let loading = false;

function badge(kind, key) {
  return el("span", "badge badge-" + kind, t(key));
}

function actionButton(action, key, className = "button button-small") {
  const button = el("button", className, t(key));
  button.type = "button";
  button.dataset.action = action;
  return button;
}

function terminalRow(terminal) {
  const tr = el("tr");
  tr.dataset.terminalId = terminal.terminal_id;
  tr.dataset.online = String(terminal.online);
  tr.dataset.permitted = String(terminal.permitted);
  tr.dataset.revoked = String(terminal.revoked);

  const name = el("td");
  name.append(el("strong", "terminal-name", terminal.name), el("code", "id", terminal.terminal_id));
  const flags = el("div", "flags");
  if (terminal.revoked) flags.append(badge("danger", "admin.revoked"));
  if (!terminal.enrolled) flags.append(badge("muted", "admin.not_enrolled"));
  if (flags.childElementCount) name.append(flags);

  const agent = el("td");
  agent.append(terminal.online ? badge("ok", "admin.online") : badge("muted", "admin.offline"));
  if (terminal.backend) {
    agent.append(el("div", "small muted", `${t("admin.backend")}: ${terminal.backend}`));
  }

  const permission = el("td");
  permission.append(terminal.permitted ? badge("ok", "admin.permitted") : badge("warn", "admin.forbidden"));
  const toggle = terminal.permitted
    ? actionButton("forbid", "admin.forbid")
    : actionButton("permit", "admin.permit", "button button-small button-primary");
  toggle.setAttribute("role", "switch");
  toggle.setAttribute("aria-checked", String(terminal.permitted));
  toggle.disabled = terminal.revoked;
  const toggleCell = el("div", "cell-action");
  toggleCell.append(toggle);
  permission.append(toggleCell);

  const policy = el("td");
  if (terminal.policy) {
    policy.append(terminal.policy.read_only ? badge("info", "admin.read_only") : badge("muted", "admin.read_write"));
    const readers = terminal.policy.allowed_readers || [];
    policy.append(el("div", "small muted",
      readers.length ? `${t("admin.allowed_readers")} ${readers.join(", ")}` : t("admin.all_readers")));
  } else {
    policy.textContent = "—";
  }

  const readers = el("td");
  if (terminal.readers.length === 0) {
    readers.append(el("span", "muted", t("admin.no_readers")));
  } else {
    const list = el("ul", "plain");
    for (const reader of terminal.readers) {
      list.append(el("li", "", `${reader.name} — ${t("admin.reader_" + reader.state)}`));
    }
    readers.append(list);
  }

  const pairings = el("td");
  if (terminal.pairings.length === 0) {
    pairings.append(el("span", "muted", t("admin.no_pairings")));
  } else {
    const list = el("ul", "plain");
    for (const pairing of terminal.pairings) {
      const item = el("li", "pairing");
      item.dataset.pairingId = pairing.pairing_id;
      item.append(el("code", "id", pairing.pairing_id),
        el("span", "small muted", ` ${t("admin.paired_at")} ${pairing.created_at} `));
      if (pairing.revoked) {
        item.append(badge("danger", "admin.revoked"));
      } else {
        const revoke = actionButton("revoke-pairing", "admin.revoke_pairing");
        revoke.dataset.pairingId = pairing.pairing_id;
        item.append(revoke);
      }
      list.append(item);
    }
    pairings.append(list);
  }

  const actions = el("td");
  const revoke = actionButton("revoke", "admin.revoke", "button button-small button-danger");
  revoke.disabled = terminal.revoked;
  actions.append(revoke);

  tr.append(name, agent, permission, policy, readers, pairings, actions);
  return tr;
}

function renderTerminals(force = false) {
  if (!terminals) return;
  const key = JSON.stringify(terminals);
  if (!force && key === shownTerminals) return;
  shownTerminals = key;
  // Keep keyboard focus on the same control across the refresh.
  const focused = terminalsBody.contains(document.activeElement) ? controlKey(document.activeElement) : null;
  terminalsBody.replaceChildren(...terminals.map(terminalRow));
  terminalsEmpty.hidden = terminals.length > 0;
  if (focused) {
    [...terminalsBody.querySelectorAll("button[data-action]")].find((b) => controlKey(b) === focused)?.focus();
  }
}

/** Identifies a row's control across re-renders (the permission switch flips its action). */
function controlKey(button) {
  const action = button.dataset.action === "permit" ? "forbid" : button.dataset.action;
  return [button.closest("tr")?.dataset.terminalId, action, button.dataset.pairingId ?? ""].join("|");
}

/** Take in a fresh newest page, keeping loaded older rows when nothing lies between them. */
function mergeNewest(page) {
  const oldestNew = page.entries.length ? page.entries[page.entries.length - 1].audit_id : null;
  const newestKnown = audit && audit.length ? audit[0].audit_id : null;
  const joins = page.next_before === null || oldestNew === null || newestKnown === null || oldestNew <= newestKnown;
  if (auditExpanded && joins) {
    audit = [...page.entries, ...audit.filter((entry) => oldestNew === null || entry.audit_id < oldestNew)];
    return;
  }
  // More than a page arrived since the last refresh: start again from the newest page.
  if (auditExpanded) auditGeneration += 1;
  auditExpanded = false;
  audit = page.entries;
  auditCursor = page.next_before;
}

async function loadOlder() {
  if (auditCursor === null) return;
  const generation = auditGeneration;
  auditOlder.disabled = true;
  try {
    const page = await api("GET", `/api/admin/audit?before=${encodeURIComponent(auditCursor)}&limit=${AUDIT_PAGE}`);
    if (generation !== auditGeneration) return;
    const oldest = audit.length ? audit[audit.length - 1].audit_id : Infinity;
    audit = [...audit, ...page.entries.filter((entry) => entry.audit_id < oldest)];
    auditCursor = page.next_before;
    auditExpanded = true;
    renderAudit();
    showAlert(adminError, "");
  } catch (failure) {
    showAlert(adminError, `${t("admin.load_failed")}: ${describe(failure)}`);
  } finally {
    auditOlder.disabled = false;
  }
}

function renderAudit(force = false) {
  if (!audit) return;
  auditOlder.hidden = auditCursor === null;
  const entries = [...audit].sort((a, b) => b.audit_id - a.audit_id);
  const key = JSON.stringify(entries);
  if (!force && key === shownAudit) return;
  shownAudit = key;
  auditBody.replaceChildren(...entries.map((entry) => {
    const tr = el("tr");
    tr.dataset.auditId = String(entry.audit_id);
    tr.append(el("td", "nowrap", entry.at), el("td", "", entry.actor), el("td", "", entry.action),
      el("td", "", entry.subject), el("td", "", entry.detail));
    return tr;
  }));
  auditEmpty.hidden = entries.length > 0;
}

async function refresh() {
  if (loading) return;
  loading = true;
  try {
    const [nextTerminals, nextAudit] = await Promise.all([
      api("GET", "/api/admin/terminals"),
      api("GET", `/api/admin/audit?limit=${AUDIT_PAGE}`),
    ]);
    terminals = nextTerminals;
    mergeNewest(nextAudit);
    renderTerminals();
    renderAudit();
    showAlert(adminError, "");
    updated.textContent = `${t("admin.updated")} ${new Date().toLocaleTimeString()}`;
    document.documentElement.dataset.adminLoaded = "true";
  } catch (failure) {
    showAlert(adminError, `${t("admin.load_failed")}: ${describe(failure)}`);
  } finally {
    loading = false;
  }
}

terminalsBody.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.disabled) return;
  const terminalId = button.closest("tr")?.dataset.terminalId;
  const id = encodeURIComponent(terminalId || "");
  const calls = {
    permit: () => api("PUT", `/api/admin/terminals/${id}/permission`, { permitted: true }),
    forbid: () => api("PUT", `/api/admin/terminals/${id}/permission`, { permitted: false }),
    revoke: () => api("POST", `/api/admin/terminals/${id}/revoke`),
    "revoke-pairing": () => api("POST", `/api/admin/pairings/${encodeURIComponent(button.dataset.pairingId)}/revoke`),
  };
  const call = calls[button.dataset.action];
  if (!call) return;
  button.disabled = true;
  try {
    await call();
    showAlert(adminError, "");
  } catch (failure) {
    showAlert(adminError, describe(failure));
  }
  await refresh();
  button.disabled = false;
});

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
    document.getElementById("created-expires").textContent = answer.expires_at;
    document.getElementById("created-command").textContent = command;
    created.dataset.terminalId = answer.terminal_id;
    created.hidden = false;
    createName.value = "";
    await refresh();
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

auditOlder.addEventListener("click", loadOlder);

onLangChange(() => {
  renderTerminals(true);
  renderAudit(true);
});

loadSession()
  .then(refresh)
  .catch((failure) => showAlert(adminError, describe(failure)));
setInterval(refresh, REFRESH_MS);
