// Administration: the terminals (refreshed every 2 s) with their permission and top-up switches,
// revocation of terminals and browser pairings, enrolment of new terminals, the stored-value cards
// (search, register, block with a reason, unblock; refreshed on demand so that a reason being
// typed survives), and the audit log: the newest page refreshed with the terminals, older pages on
// request.
import { t, onLangChange, currentLang } from "/js/i18n.js";
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

// Texts of the top-up administration, in both languages (marked data-admin-text and
// data-admin-placeholder in the page).
const TEXTS = {
  en: {
    "col_topup": "Top-up",
    "topup_on": "top-up on",
    "topup_off": "top-up off",
    "topup_enable": "Switch top-up on",
    "topup_disable": "Switch top-up off",
    "purse.heading": "Stored-value cards",
    "purse.intro": "Only the cards registered here are admitted at top-up terminals. Block a card reported lost or stolen; it is refused at every terminal until unblocked.",
    "purse.search": "Card serial ends with",
    "purse.search_placeholder": "e.g. 0421",
    "purse.search_submit": "Search",
    "purse.search_invalid": "Search by the last hexadecimal digits of the card serial (0–9, A–F)",
    "purse.col_serial": "Card serial",
    "purse.col_holder": "Holder",
    "purse.col_bound": "Bank card",
    "purse.col_status": "Status",
    "purse.col_actions": "Actions",
    "purse.empty": "No cards found",
    "purse.prev": "Previous page",
    "purse.next": "Next page",
    "purse.page": "Page {page}",
    "purse.not_bound": "not bound",
    "purse.bound": "ending {last4}",
    "purse.active": "active",
    "purse.blocked": "blocked",
    "purse.reason": "Reason",
    "purse.reason_placeholder": "Why (e.g. reported lost)",
    "purse.reason_missing": "Say why the card is blocked",
    "purse.block": "Block",
    "purse.unblock": "Unblock",
    "purse.add_heading": "Register a card",
    "purse.add_serial": "Card serial",
    "purse.add_serial_placeholder": "16 hexadecimal digits",
    "purse.add_user": "Holder's user name",
    "purse.add_submit": "Register card",
    "exc.heading": "Top-ups that need a person",
    "exc.intro": "The bank or the card would not say what happened. Look at the bank statement (before the debit is known) or the card (after it), then record what you found; the money then moves by itself.",
    "exc.col_topup": "Top-up",
    "exc.col_card": "Card",
    "exc.col_amount": "Amount",
    "exc.col_reason": "Why",
    "exc.col_actions": "What you found",
    "exc.empty": "None: every top-up is settled or moving on its own",
    "exc.reload": "Look again",
    "exc.reason.debit_unresolved": "the bank would not say whether it debited",
    "exc.reason.write_unresolved": "the card would not prove whether the load committed",
    "exc.reason.refund_unresolved": "the bank would not say whether it refunded",
    "exc.reason.refund_declined": "the bank declined the refund",
    "exc.decision.debited": "Statement shows the debit",
    "exc.decision.not_debited": "Statement shows no debit",
    "exc.decision.credited": "Card shows the load",
    "exc.decision.not_credited": "Card does not show it: refund",
  },
  "zh-CN": {
    "col_topup": "充值",
    "topup_on": "已开通充值",
    "topup_off": "未开通充值",
    "topup_enable": "开通充值",
    "topup_disable": "关闭充值",
    "purse.heading": "储值卡",
    "purse.intro": "只有在此登记的卡才能在充值终端使用。挂失或被盗的卡请冻结，解冻前所有终端都会拒绝该卡。",
    "purse.search": "卡序列号结尾为",
    "purse.search_placeholder": "例如 0421",
    "purse.search_submit": "查询",
    "purse.search_invalid": "请按卡序列号末尾的十六进制数字查询（0–9、A–F）",
    "purse.col_serial": "卡序列号",
    "purse.col_holder": "持卡人",
    "purse.col_bound": "银行卡",
    "purse.col_status": "状态",
    "purse.col_actions": "操作",
    "purse.empty": "没有找到卡片",
    "purse.prev": "上一页",
    "purse.next": "下一页",
    "purse.page": "第 {page} 页",
    "purse.not_bound": "未绑定",
    "purse.bound": "尾号 {last4}",
    "purse.active": "正常",
    "purse.blocked": "已冻结",
    "purse.reason": "原因",
    "purse.reason_placeholder": "原因（例如：挂失）",
    "purse.reason_missing": "请填写冻结原因",
    "purse.block": "冻结",
    "purse.unblock": "解冻",
    "purse.add_heading": "登记储值卡",
    "purse.add_serial": "卡序列号",
    "purse.add_serial_placeholder": "16 位十六进制数字",
    "purse.add_user": "持卡人用户名",
    "purse.add_submit": "登记",
    "exc.heading": "需要人工处理的充值",
    "exc.intro": "银行或卡片未能说明结果。请查看银行对账单（扣款未确认时）或卡片（扣款已确认时），然后记录所见；资金随后自动处理。",
    "exc.col_topup": "充值单",
    "exc.col_card": "卡片",
    "exc.col_amount": "金额",
    "exc.col_reason": "原因",
    "exc.col_actions": "核实结果",
    "exc.empty": "无：所有充值均已完成或在自动处理中",
    "exc.reload": "刷新",
    "exc.reason.debit_unresolved": "银行未说明是否已扣款",
    "exc.reason.write_unresolved": "卡片未能证明圈存是否成功",
    "exc.reason.refund_unresolved": "银行未说明是否已退款",
    "exc.reason.refund_declined": "银行拒绝退款",
    "exc.decision.debited": "对账单显示已扣款",
    "exc.decision.not_debited": "对账单显示未扣款",
    "exc.decision.credited": "卡片显示已圈存",
    "exc.decision.not_credited": "卡片未显示：退款",
  },
};

/** A text of this page in the current language; `{name}` placeholders from `vars`. */
function tx(key, vars = {}) {
  const text = (TEXTS[currentLang()] || TEXTS.en)[key] ?? TEXTS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

function translatePage() {
  for (const node of document.querySelectorAll("[data-admin-text]")) node.textContent = tx(node.dataset.adminText);
  for (const node of document.querySelectorAll("[data-admin-placeholder]")) {
    node.setAttribute("placeholder", tx(node.dataset.adminPlaceholder));
  }
}

const purseBody = document.getElementById("purse-body");
const purseEmpty = document.getElementById("purse-empty");
const purseError = document.getElementById("purse-error");
const purseSearch = document.getElementById("purse-search");
const purseQuery = document.getElementById("purse-q");
const pursePrev = document.getElementById("purse-prev");
const purseNext = document.getElementById("purse-next");
const pursePage = document.getElementById("purse-page");
const purseAdd = document.getElementById("purse-add");
const purseAddError = document.getElementById("purse-add-error");

let terminals = null;
// The stored-value cards shown: the search, the page (from 1) and its answer.
let purse = { q: "", page: 1, answer: null };
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
  tr.dataset.topupEnabled = String(Boolean(terminal.topup_enabled));

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

  const topup = el("td");
  topup.append(terminal.topup_enabled
    ? el("span", "badge badge-ok", tx("topup_on"))
    : el("span", "badge badge-muted", tx("topup_off")));
  const topupToggle = el("button", terminal.topup_enabled ? "button button-small" : "button button-small button-primary",
    tx(terminal.topup_enabled ? "topup_disable" : "topup_enable"));
  topupToggle.type = "button";
  topupToggle.dataset.action = terminal.topup_enabled ? "topup-off" : "topup-on";
  topupToggle.setAttribute("role", "switch");
  topupToggle.setAttribute("aria-checked", String(Boolean(terminal.topup_enabled)));
  topupToggle.disabled = terminal.revoked;
  const topupCell = el("div", "cell-action");
  topupCell.append(topupToggle);
  topup.append(topupCell);

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

  tr.append(name, agent, permission, topup, policy, readers, pairings, actions);
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

/** Identifies a row's control across re-renders (the switches flip their action). */
function controlKey(button) {
  const flips = { permit: "forbid", "topup-on": "topup-off" };
  const action = flips[button.dataset.action] ?? button.dataset.action;
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
    "topup-on": () => api("POST", `/api/admin/terminals/${id}/topup`, { enabled: true }),
    "topup-off": () => api("POST", `/api/admin/terminals/${id}/topup`, { enabled: false }),
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

// ---------------------------------------------------------------- stored-value cards

function purseRow(card) {
  const tr = el("tr");
  tr.dataset.cardSerial = card.card_serial;
  tr.dataset.status = card.status;

  const serial = el("td");
  serial.append(el("code", "", card.card_serial));

  const bound = el("td", card.bound_card_last4 ? "" : "muted",
    card.bound_card_last4 ? tx("purse.bound", { last4: card.bound_card_last4 }) : tx("purse.not_bound"));

  const status = el("td");
  if (card.status === "blocked") {
    status.append(el("span", "badge badge-danger", tx("purse.blocked")));
    if (card.blocked_reason) status.append(el("div", "small muted", card.blocked_reason));
  } else {
    status.append(el("span", "badge badge-ok", tx("purse.active")));
  }

  const actions = el("td");
  const cell = el("div", "cell-action");
  if (card.status === "blocked") {
    const unblock = el("button", "button button-small", tx("purse.unblock"));
    unblock.type = "button";
    unblock.dataset.action = "unblock";
    cell.append(unblock);
  } else {
    const reason = el("input");
    reason.type = "text";
    reason.maxLength = 200;
    reason.dataset.reason = "";
    reason.placeholder = tx("purse.reason_placeholder");
    reason.setAttribute("aria-label", `${tx("purse.reason")} (${card.card_serial})`);
    const block = el("button", "button button-small button-danger", tx("purse.block"));
    block.type = "button";
    block.dataset.action = "block";
    cell.append(reason, block);
  }
  actions.append(cell);

  tr.append(serial, el("td", "", card.username), bound, status, actions);
  return tr;
}

function renderPurse() {
  const answer = purse.answer;
  if (!answer) return;
  purseBody.replaceChildren(...answer.cards.map(purseRow));
  purseEmpty.hidden = answer.cards.length > 0;
  pursePrev.hidden = answer.page <= 1;
  purseNext.hidden = !answer.has_more;
  pursePage.textContent = answer.page > 1 || answer.has_more ? tx("purse.page", { page: answer.page }) : "";
}

async function loadPurse() {
  const query = new URLSearchParams({ page: String(purse.page) });
  if (purse.q) query.set("q", purse.q);
  try {
    purse.answer = await api("GET", `/api/admin/purse-cards?${query}`);
    renderPurse();
    showAlert(purseError, "");
    document.documentElement.dataset.purseLoaded = "true";
  } catch (failure) {
    showAlert(purseError, describe(failure));
  }
}

purseSearch.addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = purseQuery.value.trim();
  if (!/^[0-9A-Fa-f]{0,16}$/.test(q)) {
    showAlert(purseError, tx("purse.search_invalid"));
    purseQuery.focus();
    return;
  }
  purse = { q, page: 1, answer: purse.answer };
  await loadPurse();
});

pursePrev.addEventListener("click", async () => {
  purse.page = Math.max(1, purse.page - 1);
  await loadPurse();
});

purseNext.addEventListener("click", async () => {
  purse.page += 1;
  await loadPurse();
});

purseBody.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.disabled) return;
  const row = button.closest("tr");
  const serial = encodeURIComponent(row?.dataset.cardSerial || "");
  let call;
  if (button.dataset.action === "block") {
    const input = row.querySelector("input[data-reason]");
    const reason = input.value.trim();
    if (!reason) {
      showAlert(purseError, tx("purse.reason_missing"));
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
    showAlert(purseError, "");
    await loadPurse();
    await refresh();
  } catch (failure) {
    showAlert(purseError, describe(failure));
    button.disabled = false;
  }
});

purseAdd.addEventListener("submit", async (event) => {
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
  showAlert(purseAddError, "");
  try {
    const card = await api("POST", "/api/admin/purse-cards", { card_serial: cardSerial, username });
    serialInput.value = "";
    userInput.value = "";
    // Show the new card: search for it.
    purseQuery.value = card.card_serial;
    purse = { q: card.card_serial, page: 1, answer: purse.answer };
    await loadPurse();
    await refresh();
  } catch (failure) {
    showAlert(purseAddError, describe(failure));
  }
});

onLangChange(() => {
  translatePage();
  renderTerminals(true);
  renderAudit(true);
  renderPurse();
});

translatePage();
loadSession()
  .then(() => Promise.all([refresh(), loadPurse()]))
  .catch((failure) => showAlert(adminError, describe(failure)));
setInterval(refresh, REFRESH_MS);

// ---------------------------------------------------------------- top-ups that need a person

const exceptionsBody = document.getElementById("exceptions-body");
const exceptionsEmpty = document.getElementById("exceptions-empty");
const exceptionsError = document.getElementById("exceptions-error");
let exceptions = [];

function yuan(minor) {
  return `¥${(minor / 100).toFixed(2)}`;
}

function exceptionRow(topup) {
  const tr = el("tr");
  tr.dataset.topupId = topup.topup_id;
  const id = el("td");
  id.append(el("code", "", topup.topup_id));
  const actions = el("td");
  const cell = el("div", "cell-action");
  for (const decision of topup.decisions) {
    const button = el("button", "button button-small", tx(`exc.decision.${decision}`));
    button.type = "button";
    button.dataset.decision = decision;
    cell.append(button);
  }
  actions.append(cell);
  tr.append(id, el("td", "", topup.card_masked), el("td", "", yuan(topup.amount_minor)),
    el("td", "", tx(`exc.reason.${topup.reason}`)), actions);
  return tr;
}

function renderExceptions() {
  exceptionsBody.replaceChildren(...exceptions.map(exceptionRow));
  exceptionsEmpty.hidden = exceptions.length > 0;
}

async function loadExceptions() {
  try {
    exceptions = await api("GET", "/api/admin/topups?state=exception");
    showAlert(exceptionsError, "");
    renderExceptions();
  } catch (e) {
    showAlert(exceptionsError, describe(e));
  }
}

exceptionsBody.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-decision]");
  if (!button) return;
  const id = button.closest("tr").dataset.topupId;
  button.disabled = true;
  try {
    await api("POST", `/api/admin/topups/${encodeURIComponent(id)}/decision`, { decision: button.dataset.decision });
    await loadExceptions();
  } catch (e) {
    showAlert(exceptionsError, describe(e));
    button.disabled = false;
  }
});
document.getElementById("exceptions-reload").addEventListener("click", loadExceptions);
onLangChange(renderExceptions);
loadExceptions();
