// The operator's console: one page of sections behind tabs (terminals, alarms, top-ups,
// settlement, stored-value cards, audit log), kept current by the live feed of `/ws/admin`
// instead of polling. Each section is its own module (`admin-*.js`) that loads its data when first
// shown; this one wires the tabs (the WAI-ARIA tabs pattern: arrow keys, Home, End; the chosen tab
// in the address's #fragment), the feed, and the language switch.
import { t, onLangChange } from "/js/i18n.js";
import { describe } from "/js/api.js";
import { loadSession } from "/js/session.js";
import { LiveFeed } from "/js/admin-live.js";
import * as terminals from "/js/admin-terminals.js";
import * as alarms from "/js/admin-alarms.js";
import * as topups from "/js/admin-topups.js";
import * as settlement from "/js/admin-settlement.js";
import * as cards from "/js/admin-cards.js";
import * as audit from "/js/admin-audit.js";

const SECTIONS = { terminals, alarms, topups, settlement, cards, audit };

// ---------------------------------------------------------------- tabs

const tablist = document.getElementById("console-tabs");
const tabs = [...tablist.querySelectorAll("[role=tab]")];
let current = null;

function select(name, { focus = false } = {}) {
  if (!SECTIONS[name]) name = "terminals";
  for (const tab of tabs) {
    const chosen = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(chosen));
    tab.tabIndex = chosen ? 0 : -1;
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !chosen;
    if (chosen && focus) tab.focus();
  }
  if (current !== name) {
    if (current) SECTIONS[current].shown?.(false);
    current = name;
    SECTIONS[name].shown?.(true);
  }
  document.documentElement.dataset.consoleTab = name;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

tablist.addEventListener("click", (event) => {
  const tab = event.target.closest("[role=tab]");
  if (tab) select(tab.dataset.tab);
});

tablist.addEventListener("keydown", (event) => {
  const at = tabs.indexOf(document.activeElement);
  if (at < 0) return;
  const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = tabs[(moves[event.key] + tabs.length) % tabs.length];
  select(next.dataset.tab, { focus: true });
});

window.addEventListener("hashchange", () => select(location.hash.slice(1)));

// ---------------------------------------------------------------- the live feed

const liveStatus = document.getElementById("live-status");
const liveText = document.getElementById("live-text");
const liveRetry = document.getElementById("live-retry");
let status = { state: "connecting" };
let countdown = null;
let snapshots = 0;

function renderStatus() {
  liveStatus.dataset.live = status.state;
  document.documentElement.dataset.adminLive = status.state;
  liveRetry.hidden = status.state !== "waiting";
  if (status.state === "live") liveText.textContent = t("console.live_on");
  else if (status.state === "connecting") liveText.textContent = t("console.live_connecting");
  else liveText.textContent = t("console.live_waiting", { s: Math.max(1, Math.ceil((status.retryAt - Date.now()) / 1000)) });
}

const feed = new LiveFeed({
  onStatus(next) {
    status = next;
    clearInterval(countdown);
    countdown = next.state === "waiting" ? setInterval(renderStatus, 1000) : null;
    renderStatus();
  },
  onFrame(frame) {
    switch (frame.type) {
      case "snapshot":
        snapshots += 1;
        terminals.onSnapshot(frame.terminals, snapshots === 1);
        alarms.onSnapshot(frame.open_alarms);
        for (const alarm of frame.open_alarms) audit.onAlarm(alarm);
        break;
      case "terminal_changed":
        terminals.onTerminalChanged(frame.terminal);
        break;
      case "alarm_raised":
      case "alarm_acked":
      case "alarm_cleared":
        alarms.onAlarm(frame.type, frame.alarm);
        topups.onAlarm(frame.alarm);
        audit.onAlarm(frame.alarm);
        break;
      default:
        break;
    }
  },
});

liveRetry.addEventListener("click", () => feed.retryNow());

// ---------------------------------------------------------------- start

onLangChange(() => {
  renderStatus();
  for (const section of Object.values(SECTIONS)) section.render();
});

renderStatus();
loadSession()
  .then(() => {
    select(location.hash.slice(1), {});
    terminals.load();
    topups.loadExceptions();
    feed.start();
  })
  .catch((failure) => {
    liveText.textContent = describe(failure);
  });
