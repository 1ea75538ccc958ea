// Settlement: settle a business day (`POST /api/admin/settlements`), a day's report (`GET
// /api/admin/settlements/{date}?revision=`: figures, counts per class, the mismatches with what to
// do in the page's language, by terminal), the server's chart (`chart.svg` as an image) and the
// CSV and XLSX exports in both languages; the settled days (the latest 60, then up to a year on
// asking: the list computes every day's figures on the server), searched and paged in the page.
import { t, currentLang } from "/js/i18n.js";
import { api, ApiFailure, describe, el, showAlert } from "/js/api.js";
import { actionButton, badge, formatUtc, matches, pager, yuan } from "/js/admin-common.js";
import { nameOf } from "/js/admin-terminals.js";

const PAGE_SIZE = 30;
/** Days listed at first, and at most (`?limit=`). */
const FIRST_DAYS = 60;
const MOST_DAYS = 366;
const CLASSES = ["matched", "bank_only", "ledger_only", "card_unconfirmed", "amount_mismatch"];

const form = document.getElementById("settle-form");
const dateInput = document.getElementById("settle-date");
const submit = document.getElementById("settle-submit");
const settleError = document.getElementById("settle-error");
const outcome = document.getElementById("settle-outcome");
const report = document.getElementById("report");
const revisionLabel = document.getElementById("report-revision-label");
const revisionSelect = document.getElementById("report-revision");
const chart = document.getElementById("report-chart");
const listBody = document.getElementById("settlements-body");
const listEmpty = document.getElementById("settlements-empty");
const listError = document.getElementById("settlements-error");
const search = document.getElementById("settlement-q");
const mismatchedOnly = document.getElementById("settlement-mismatched");

/** The report on screen: `SettlementReport`. */
let current = null;
let lastOutcome = null;
let days = null;
let daysAsked = FIRST_DAYS;
let page = 1;

const pages = pager(document.getElementById("settlements-pager"), {
  async go(delta) {
    page += delta;
    // Past the last page of the first days: the rest of the year.
    if (delta > 0 && days && (page - 1) * PAGE_SIZE >= days.length && daysAsked < MOST_DAYS) {
      daysAsked = MOST_DAYS;
      await loadList();
      return;
    }
    renderList();
  },
});

function isoDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function figure(label, value, kind) {
  const wrap = el("div", "figure");
  const dd = el("dd");
  if (kind) dd.append(badge(kind, value));
  else dd.textContent = value;
  wrap.append(el("dt", "", label), dd);
  return wrap;
}

function exportUrl(summary, file, lang) {
  const query = new URLSearchParams({ lang, revision: String(summary.revision) });
  return `/api/admin/settlements/${encodeURIComponent(summary.date)}/${file}?${query}`;
}

function downloads(summary) {
  const list = document.getElementById("report-downloads");
  const items = [];
  for (const [file, format] of [["report.xlsx", "xlsx"], ["report.csv", "csv"]]) {
    for (const lang of ["zh-CN", "en"]) {
      const link = el("a", "download", t(`console.download_${format}`, { language: t(`console.language_${lang === "en" ? "en" : "zh"}`) }));
      link.href = exportUrl(summary, file, lang);
      link.setAttribute("download", `settlement-${summary.date}-r${summary.revision}-${lang}.${format}`);
      link.hreflang = lang;
      link.dataset.format = format;
      link.dataset.lang = lang;
      const item = el("li");
      item.append(link);
      items.push(item);
    }
  }
  list.replaceChildren(...items);
}

function renderReport() {
  if (!current) return;
  const s = current.summary;
  report.hidden = false;
  report.dataset.date = s.date;
  report.dataset.revision = String(s.revision);
  document.getElementById("report-heading").textContent = t("console.report_heading", { date: s.date, revision: s.revision });
  document.getElementById("report-window").textContent = t("console.report_window", {
    start: formatUtc(s.day_starts_at), end: formatUtc(s.day_ends_at), zone: s.time_zone, cutoff: s.cutoff,
    at: formatUtc(s.settled_at), by: s.settled_by,
  });
  revisionLabel.hidden = s.revisions <= 1;
  revisionSelect.replaceChildren(...Array.from({ length: s.revisions }, (_, i) => {
    const n = s.revisions - i;
    const option = el("option", "", n === s.revisions ? t("console.revision_latest", { n }) : String(n));
    option.value = String(n);
    return option;
  }));
  revisionSelect.value = String(s.revision);

  document.getElementById("report-figures").replaceChildren(
    figure(t("console.col_topups"), String(s.n_topups)),
    figure(t("console.fig_completed"), t("console.fig_completed_value", { n: s.n_completed, amount: yuan(s.completed_minor) })),
    figure(t("console.fig_debits"), t("console.fig_ledger_bank", { ledger: yuan(s.ledger_debit_minor), bank: yuan(s.bank_debit_minor) })),
    figure(t("console.fig_refunds"), t("console.fig_ledger_bank", { ledger: yuan(s.ledger_refund_minor), bank: yuan(s.bank_refund_minor) })),
    figure(t("console.col_mismatches"), String(s.n_mismatches), s.n_mismatches ? "danger" : "ok"),
  );
  document.getElementById("report-classes").replaceChildren(
    ...CLASSES.map((c) => figure(t(`console.class.${c}`), String(s.counts[c]), c === "matched" ? null : s.counts[c] ? "danger" : null)),
  );
  downloads(s);
  chart.src = exportUrl(s, "chart.svg", currentLang());
  chart.alt = t("console.chart_alt", { date: s.date, amount: yuan(s.completed_minor) });

  const lang = currentLang();
  const mismatchRows = current.mismatches.map((item) => {
    const tr = el("tr");
    tr.dataset.class = item.class;
    const cls = el("td");
    cls.append(badge("danger", t(`console.class.${item.class}`)));
    const topup = el("td");
    topup.append(el("code", "", item.topup_id || item.bank_key || "—"));
    tr.append(cls, el("td", "", item.reason_text[lang] ?? item.reason_text.en), el("td", "", item.action[lang] ?? item.action.en),
      topup, el("td", "", item.card_masked || "—"), el("td", "num amount", yuan(item.amount_minor)));
    return tr;
  });
  document.getElementById("mismatches-body").replaceChildren(...mismatchRows);
  document.getElementById("mismatches-empty").hidden = mismatchRows.length > 0;
  document.getElementById("by-terminal-body").replaceChildren(...current.by_terminal.map((g) => {
    const tr = el("tr");
    const name = el("td");
    const known = g.key !== "-" ? nameOf(g.key) : null;
    name.append(g.key === "-" ? el("span", "muted", t("console.no_terminal")) : el("span", "", known ?? g.key));
    if (known) name.append(el("code", "id", g.key));
    tr.append(name, el("td", "num", String(g.n_topups)), el("td", "num", String(g.n_completed)), el("td", "num amount", yuan(g.completed_minor)), el("td", "num", String(g.n_mismatches)));
    return tr;
  }));
}

function renderOutcome() {
  if (!lastOutcome) return;
  const s = lastOutcome.report.summary;
  showAlert(outcome, lastOutcome.new_revision
    ? t("console.settled_new", { date: s.date, revision: s.revision, mismatches: s.n_mismatches })
    : t("console.settled_same", { date: s.date, revision: s.revision }));
  outcome.dataset.newRevision = String(lastOutcome.new_revision);
}

async function openReport(date, revision) {
  const query = revision ? `?revision=${revision}` : "";
  try {
    current = await api("GET", `/api/admin/settlements/${encodeURIComponent(date)}${query}`);
    showAlert(listError, "");
    renderReport();
  } catch (failure) {
    showAlert(listError, describe(failure));
  }
}

function renderList() {
  if (!days) return;
  const needle = search.value.trim().toLowerCase();
  const shown = days.filter((d) => matches(needle, d.date, d.settled_by) && (!mismatchedOnly.checked || d.n_mismatches > 0));
  const pagesTotal = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
  page = Math.min(Math.max(1, page), pagesTotal);
  listBody.replaceChildren(...shown.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE).map((d) => {
    const tr = el("tr");
    tr.dataset.date = d.date;
    const mismatches = el("td", "num");
    mismatches.append(d.n_mismatches ? badge("danger", String(d.n_mismatches)) : el("span", "", "0"));
    const actions = el("td");
    const show = actionButton("report", t("console.show_report"), "button button-small", { date: d.date });
    show.setAttribute("aria-label", `${t("console.show_report")} ${d.date}`);
    actions.append(show);
    tr.append(el("td", "nowrap", d.date), el("td", "num", d.revisions > 1 ? `${d.revision}/${d.revisions}` : String(d.revision)),
      el("td", "num", String(d.n_topups)), el("td", "num amount", yuan(d.completed_minor)), mismatches,
      el("td", "small", t("console.settled_by", { at: formatUtc(d.settled_at), by: d.settled_by })), actions);
    return tr;
  }));
  listEmpty.hidden = shown.length > 0;
  listEmpty.textContent = days.length ? t("console.no_match") : t("console.no_settlements");
  const more = days.length === daysAsked && daysAsked < MOST_DAYS && page === pagesTotal && !needle && !mismatchedOnly.checked;
  pages.show({ hasPrev: page > 1, hasNext: page < pagesTotal || more, text: shown.length > PAGE_SIZE ? t("console.page_of", { page, pages: pagesTotal }) : "" });
}

async function loadList() {
  try {
    days = await api("GET", `/api/admin/settlements?limit=${daysAsked}`);
    showAlert(listError, "");
    renderList();
  } catch (failure) {
    showAlert(listError, describe(failure));
  }
}

export function render() {
  renderOutcome();
  renderReport();
  renderList();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!dateInput.value) {
    dateInput.focus();
    return;
  }
  showAlert(settleError, "");
  showAlert(outcome, "");
  submit.disabled = true;
  submit.setAttribute("aria-busy", "true");
  try {
    lastOutcome = await api("POST", "/api/admin/settlements", { date: dateInput.value });
    current = lastOutcome.report;
    renderOutcome();
    renderReport();
    await loadList();
  } catch (failure) {
    const known = { 422: "console.settle_not_over", 503: "console.settle_unavailable" };
    const key = failure instanceof ApiFailure ? known[failure.status] : null;
    showAlert(settleError, key ? t(key, { date: dateInput.value }) : describe(failure));
  } finally {
    submit.disabled = false;
    submit.removeAttribute("aria-busy");
  }
});

revisionSelect.addEventListener("change", () => {
  if (current) openReport(current.summary.date, revisionSelect.value);
});
listBody.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action=report]");
  if (!button) return;
  await openReport(button.dataset.date);
  document.getElementById("report-heading").setAttribute("tabindex", "-1");
  document.getElementById("report-heading").focus();
});
search.addEventListener("input", () => {
  page = 1;
  renderList();
});
mismatchedOnly.addEventListener("change", () => {
  page = 1;
  renderList();
});
document.getElementById("settlements-filter").addEventListener("submit", (event) => event.preventDefault());

let started = false;

/** The tab was opened. */
export function shown(isShown) {
  if (!isShown || started) return;
  started = true;
  if (!dateInput.value) {
    const yesterday = new Date();
    yesterday.setDate(yesterday.getDate() - 1);
    dateInput.value = isoDate(yesterday);
    dateInput.max = isoDate(new Date());
  }
  loadList();
}
