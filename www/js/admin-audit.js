// The audit log: pages newest first (`GET /api/admin/audit?before=&limit=`), searched on the
// server (`&q=`: one request looks through a bounded number of events and says where to go on),
// newer and older by the cursors; and the chain's verification as far as a browser can show it:
// the latest signed head (`GET /api/admin/audit/head`) with what it means, and whether the
// server's own periodic verification has raised `audit_chain_failed`.
import { t } from "/js/i18n.js";
import { api, ApiFailure, describe, el, showAlert } from "/js/api.js";
import { badge, formatMs, formatUtc, pager } from "/js/admin-common.js";
import { openOfKind } from "/js/admin-alarms.js";

const body = document.getElementById("audit-body");
const empty = document.getElementById("audit-empty");
const error = document.getElementById("audit-error");
const note = document.getElementById("audit-note");
const filter = document.getElementById("audit-filter");
const query = document.getElementById("audit-q");
const limitSelect = document.getElementById("audit-limit");

/** The page on screen: the search, its cursor, the cursors of the newer pages, the answer. */
let view = { q: "", limit: 50, before: null, newer: [], answer: null };
/** The head as last read: `AuditHead`, `null` before the first checkpoint, `undefined` unread. */
let head;

const pages = pager(document.getElementById("audit-pager"), {
  go(delta) {
    if (delta > 0 && view.answer?.next_before) {
      view.newer.push(view.before);
      view.before = view.answer.next_before;
    } else if (delta < 0 && view.newer.length) {
      view.before = view.newer.pop();
    }
    load();
  },
});

function renderLog() {
  const answer = view.answer;
  if (!answer) return;
  body.replaceChildren(...answer.entries.map((entry) => {
    const tr = el("tr");
    tr.dataset.auditId = String(entry.audit_id);
    tr.append(el("td", "num small muted", String(entry.audit_id)), el("td", "nowrap", formatUtc(entry.at)), el("td", "", entry.actor),
      el("td", "", entry.action), el("td", "break", entry.subject), el("td", "break", entry.detail));
    return tr;
  }));
  const entries = answer.entries;
  const stopped = view.q && answer.next_before !== null && entries.length < view.limit;
  empty.hidden = entries.length > 0;
  empty.textContent = view.q ? t("console.audit_no_match") : t("admin.audit_empty");
  const parts = [];
  if (view.q) parts.push(t("console.audit_matching", { q: view.q }));
  if (entries.length) parts.push(t("console.audit_range", { newest: entries[0].audit_id, oldest: entries[entries.length - 1].audit_id }));
  if (stopped) parts.push(t("console.audit_search_stopped", { id: answer.next_before }));
  else if (view.q && answer.next_before === null) parts.push(t("console.audit_search_done"));
  note.textContent = parts.join(" · ");
  pages.show({
    hasPrev: view.newer.length > 0,
    hasNext: answer.next_before !== null,
    text: view.newer.length ? t("console.page", { page: view.newer.length + 1 }) : "",
  });
}

async function load() {
  const params = new URLSearchParams({ limit: String(view.limit) });
  if (view.before !== null) params.set("before", String(view.before));
  if (view.q) params.set("q", view.q);
  try {
    view.answer = await api("GET", `/api/admin/audit?${params}`);
    showAlert(error, "");
    renderLog();
  } catch (failure) {
    showAlert(error, describe(failure));
  }
}

filter.addEventListener("submit", (event) => {
  event.preventDefault();
  view = { q: query.value.trim(), limit: Number(limitSelect.value), before: null, newer: [], answer: view.answer };
  load();
});
limitSelect.addEventListener("change", () => filter.requestSubmit());
document.getElementById("audit-newest").addEventListener("click", () => {
  query.value = "";
  view = { q: "", limit: Number(limitSelect.value), before: null, newer: [], answer: view.answer };
  load();
});

// ---------------------------------------------------------------- the chain

const chainResult = document.getElementById("chain-result");
const chainError = document.getElementById("chain-error");
const verdict = document.getElementById("chain-verdict");

function figure(label, value, className = "") {
  const wrap = el("div", "figure");
  const dd = el("dd");
  dd.append(className ? el("code", className, value) : value);
  wrap.append(el("dt", "", label), dd);
  return wrap;
}

function renderChain() {
  if (head === undefined) return;
  chainResult.hidden = false;
  const failing = openOfKind("audit_chain_failed");
  let state;
  verdict.replaceChildren();
  if (failing.length) {
    state = "failed";
    verdict.append(badge("danger", t("console.chain_failed")), " ", t("console.chain_failed_text", { detail: failing.map((a) => a.detail).join("; ") }));
  } else if (head) {
    state = "signed";
    verdict.append(badge("ok", t("console.chain_ok")), " ", t("console.chain_ok_text"));
  } else {
    state = "none";
    verdict.append(badge("muted", t("console.chain_none")), " ", t("console.chain_none_text"));
  }
  chainResult.dataset.verdict = state;
  const figures = document.getElementById("chain-head");
  const meaning = document.getElementById("chain-meaning");
  const download = document.getElementById("chain-download");
  download.hidden = !head;
  if (!head) {
    figures.replaceChildren();
    meaning.textContent = "";
    return;
  }
  figures.replaceChildren(
    figure(t("console.chain_checkpoint"), `#${head.checkpoint_id}`),
    figure(t("console.chain_count"), String(head.event_count)),
    figure(t("console.chain_signed_at"), formatMs(head.at_ms)),
    figure(t("console.chain_head_hash"), head.head_hash, "hash"),
    figure(t("console.chain_key"), head.public_key, "hash"),
  );
  figures.dataset.eventCount = String(head.event_count);
  meaning.textContent = t("console.chain_meaning", { count: head.event_count, at: formatMs(head.at_ms) });
}

async function verify() {
  const button = document.getElementById("chain-verify");
  button.disabled = true;
  try {
    head = await api("GET", "/api/admin/audit/head");
    showAlert(chainError, "");
  } catch (failure) {
    if (failure instanceof ApiFailure && failure.status === 404) {
      head = null;
    } else {
      showAlert(chainError, describe(failure));
    }
  } finally {
    button.disabled = false;
  }
  renderChain();
}

document.getElementById("chain-verify").addEventListener("click", verify);

export function render() {
  renderLog();
  renderChain();
}

/** An `audit_chain_failed` alarm came or went: the verdict shown changes with it. */
export function onAlarm(alarm) {
  if (alarm.kind === "audit_chain_failed") renderChain();
}

let started = false;

/** The tab was opened. */
export function shown(isShown) {
  if (!isShown || started) return;
  started = true;
  load();
  verify();
}
