// The self-service top-up kiosk (patent R: R1 at the reader, R3.3–R3.5 on the server): one
// WebSocket to /ws/kiosk on this page's origin, JSON text frames as in protocol/src/kiosk.rs.
//
// Nobody signs in here: the browser's pairing cookie names the terminal, and the stored-value card
// the person taps is who they are. The page holds no card logic and no full card number except a
// bank-card number typed on the keypad, which goes once in `start_binding` and is then forgotten.
//
// Layout: `model` is everything the page knows; frames (`onFrame`) and touches (`onAction`,
// `onKey`) change it and `send` frames; `render` puts the model on the page, every time, whole.
//
// Hooks for the browser tests: <html data-kiosk-screen>, [data-kiosk-action], [data-key],
// #kiosk-balance, #kiosk-card, #kiosk-bound, #kiosk-tac, #kiosk-new-balance, #kiosk-message
// (data-code, data-kind), #kiosk-stage (data-stage), #kiosk-phone, #kiosk-code.
import { t, onLangChange, currentLang } from "/js/i18n.js";

/** Screens, as on <html data-kiosk-screen>. */
const SCREENS = [
  "connecting", "unavailable", "tap", "reading", "card", "bind-tap", "bind-number",
  "bind-phone", "bind-code", "confirm", "progress", "done", "problem",
];

/** Screens with the on-screen keypad, and the model field each types into. */
const KEYPAD = {
  "bind-number": { field: "typedNumber", max: 19 },
  "bind-phone": { field: "phone", max: 15 },
  "bind-code": { field: "code", max: 6 },
};

/** Screens a person is in the middle of: after this long without a touch the kiosk starts again. */
const IDLE_MS = { card: 180_000, "bind-tap": 180_000, "bind-number": 180_000, "bind-phone": 180_000,
  "bind-code": 300_000, confirm: 120_000, done: 60_000, problem: 90_000 };

/** Refusals that say this terminal cannot be used now (the rest are about one request). */
const TERMINAL_REFUSALS = new Set([
  "not_logged_in", "not_paired", "terminal_forbidden", "consent_denied", "consent_required",
  "agent_offline", "terminal_revoked",
]);

/** Binding failures that end the binding (the rest keep the person on the step to correct). */
const BINDING_ENDS = new Set(["no_card", "too_many_codes", "too_many_attempts", "already_bound"]);

/** Top-up refusals after which the card screen is no help. */
const TOP_UP_ENDS = new Set(["unavailable"]);

/** Screens about the card of a journey, which a new wait for a card replaces. */
const JOURNEY_SCREENS = new Set(["reading", "card", "bind-tap", "bind-number", "bind-phone", "bind-code", "confirm"]);

/** Screens a `reading` frame replaces: a card has come (not during a binding or a top-up). */
const READING_FROM = new Set(["tap", "reading", "card", "done", "problem"]);

/** The phone country code shown before the keypad digits and sent with them. */
const PHONE_PREFIX = "+86";

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10_000;

const model = {
  connected: false,
  reconnecting: false,
  /** KioskView from the last `state` frame, or null. */
  view: null,
  /** The Refusal code of a `refused` frame that stops this terminal, or null. */
  refusal: null,
  screen: "connecting",
  /** Sent `arm` for the journey under way (cleared when it cannot go on). */
  armed: false,
  /** `arm` was sent on this connection at least once (later arms start with `cancel`). */
  armedOnce: false,
  /** PurseView of the card on the reader. */
  card: null,
  /** The bank card read for the binding: its last four digits. */
  bankLast4: null,
  /** Binding: waiting for the bank card | reading it. */
  bankPhase: null,
  typedNumber: "",
  phone: "",
  code: "",
  /** CodeSent frame fields. */
  codeSent: null,
  /** The amount chosen, in fen. */
  amount: null,
  /** Progress: the top-up and its stage. */
  topupId: null,
  stage: "",
  /** Completed frame fields. */
  completed: null,
  /** { kind, code, vars, tone }: what #kiosk-message says, or null. */
  message: null,
  /** A binding request was sent and its answer has not come yet. */
  pending: null,
};

let socket = null;
let reconnectDelay = RECONNECT_MIN_MS;
let reconnectTimer = null;
let idleTimer = null;

// ---------------------------------------------------------------- formatting

/** `¥50.00` for 5000 fen (other currencies: `USD 50.00`). Integer arithmetic, no rounding. */
function money(minor, currency = "CNY") {
  const n = Math.trunc(Number(minor) || 0);
  const sign = n < 0 ? "-" : "";
  const abs = Math.abs(n);
  const units = Math.floor(abs / 100);
  const cents = String(abs % 100).padStart(2, "0");
  const symbol = currency === "CNY" || currency === "" ? "¥" : currency + " ";
  return `${sign}${symbol}${units}.${cents}`;
}

function currency() {
  return (model.view && model.view.currency) || "CNY";
}

/** Digits in groups of four, for reading a card number back. */
function groups(digits) {
  return digits.replace(/(\d{4})(?=\d)/g, "$1 ");
}

function luhnValid(digits) {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** The phone as sent: `+86` before a national number, as typed when it already has the 86. */
function phoneToSend(digits) {
  if (digits.startsWith("86") && digits.length === 13) return "+" + digits;
  return PHONE_PREFIX + digits;
}

/** `14:32` in the page language for the server's UTC stamp (`2026-12-06 14:32:00`, or RFC 3339).
 *  No countdown: the server's clock decides expiry, and it need not be this browser's. */
function expiryTime(stamp) {
  const text = String(stamp || "");
  const utc = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?$/.test(text) ? text.replace(" ", "T") + "Z" : text;
  const at = Date.parse(utc);
  if (Number.isNaN(at)) return text;
  return new Date(at).toLocaleTimeString(currentLang(), { hour: "2-digit", minute: "2-digit" });
}

// ---------------------------------------------------------------- the socket

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/kiosk`;
}

function connect() {
  reconnectTimer = null;
  let ws;
  try {
    ws = new WebSocket(socketUrl());
  } catch (error) {
    // Not served over http(s) (e.g. opened as a file): keep trying, as after a lost connection.
    console.warn("kiosk: cannot open the socket", error);
    scheduleReconnect();
    return;
  }
  socket = ws;
  ws.addEventListener("open", () => {
    if (socket !== ws) return;
    model.connected = true;
    model.reconnecting = false;
    model.armedOnce = false;
    reconnectDelay = RECONNECT_MIN_MS;
    render();
  });
  ws.addEventListener("message", (event) => {
    if (socket !== ws || typeof event.data !== "string") return; // JSON text frames only
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      console.warn("kiosk: a frame that is not JSON");
      return;
    }
    onFrame(frame);
    render();
  });
  // `error` is always followed by `close`; the browser logs the failure itself.
  ws.addEventListener("close", () => {
    if (socket !== ws) return;
    socket = null;
    onDisconnected();
    scheduleReconnect();
    render();
  });
}

function scheduleReconnect() {
  if (reconnectTimer !== null) return;
  const delay = reconnectDelay;
  reconnectDelay = Math.min(RECONNECT_MAX_MS, reconnectDelay * 2);
  reconnectTimer = setTimeout(connect, delay);
}

function send(frame) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

/** The server forgets the journey with the connection: so does the page. */
function onDisconnected() {
  const wasConnected = model.connected;
  model.connected = false;
  model.reconnecting = model.reconnecting || wasConnected;
  model.armed = false;
  model.armedOnce = false;
  model.pending = null;
  // A top-up under way is the server's to finish; the person is told where it stands on the
  // next tap (unfinished top-up). Everything else starts again.
  if (model.screen === "progress") {
    showProblem("local", "connection_lost", {}, "warn");
  } else if (!["done", "problem"].includes(model.screen)) {
    resetJourney();
    if (!model.refusal) model.screen = "connecting";
  }
}

// ---------------------------------------------------------------- journeys

function resetJourney() {
  model.card = null;
  model.bankLast4 = null;
  model.bankPhase = null;
  model.typedNumber = "";
  model.phone = "";
  model.code = "";
  model.codeSent = null;
  model.amount = null;
  model.topupId = null;
  model.stage = "";
  model.completed = null;
}

/** Why the terminal cannot top up now, from its state; null when it can. */
function unusable(view) {
  if (!view) return null;
  if (!view.topup_enabled) return "terminal_not_enabled";
  if (!view.agent_online) return "agent_offline";
  if (!view.bank_available) return "bank_unavailable";
  return null;
}

/** Start a journey: `arm` (after `cancel` when one was under way) and wait for a card. */
function arm() {
  if (!model.connected || !model.view) return;
  if (model.armedOnce) send({ type: "cancel" });
  if (!send({ type: "arm" })) return;
  model.armed = true;
  model.armedOnce = true;
  resetJourney();
  model.message = null;
  model.screen = "tap";
}

/** After a `state` frame, or a person's "start again": arm, or say why not. */
function settle() {
  const why = model.refusal || unusable(model.view);
  if (why) {
    model.armed = false;
    // A top-up under way, or its result, stays on the screen; anything else gives way.
    if (!["progress", "done", "problem"].includes(model.screen)) {
      resetJourney();
      model.screen = "unavailable";
      model.message = model.refusal
        ? { kind: "refused", code: model.refusal, tone: "error" }
        : { kind: "unavailable", code: why, tone: "error" };
    }
    return;
  }
  if (!model.connected || !model.view) {
    if (!["progress", "done", "problem"].includes(model.screen)) model.screen = "connecting";
    return;
  }
  if (model.screen === "unavailable" || model.screen === "connecting") {
    model.message = null;
    model.screen = "tap";
  }
  if (!model.armed && model.screen === "tap") arm();
}

function showProblem(kind, code, vars = {}, tone = "error") {
  model.screen = "problem";
  model.message = { kind, code, vars, tone };
}

// ---------------------------------------------------------------- frames from the server

/** A reason that is either `"code"` or, for a variant with fields, `{"code": {fields}}`. */
function reasonOf(reason) {
  if (typeof reason === "string") return { code: reason, vars: {} };
  if (reason && typeof reason === "object") {
    const code = Object.keys(reason)[0] || "unknown";
    const fields = reason[code];
    return { code, vars: fields && typeof fields === "object" ? fields : {} };
  }
  return { code: "unknown", vars: {} };
}

function onFrame(frame) {
  if (frame.type !== "state") model.pending = null;
  switch (frame.type) {
    case "state": {
      const { type: _type, ...view } = frame;
      model.view = view;
      // A state that lets the terminal top up lifts an earlier refusal about the terminal.
      if (model.refusal && !unusable(view)) model.refusal = null;
      settle();
      break;
    }
    case "waiting_for_card":
      if (frame.purpose === "bank_card") {
        if (model.screen === "bind-tap" || model.screen === "bind-number") model.bankPhase = "waiting";
      } else {
        // Armed. The server forgot any card of the journey (after a binding the bank card is on
        // the reader: the stored-value card must come back), so its screens give way; a result
        // or a failure stays up until the next card comes.
        model.armed = true;
        if (JOURNEY_SCREENS.has(model.screen)) {
          resetJourney();
          model.screen = "tap";
        }
      }
      break;
    case "reading":
      if (model.screen === "bind-tap" || model.screen === "bind-number") {
        model.bankPhase = "reading"; // the bank card, on the same reader
        model.message = null;
      } else if (READING_FROM.has(model.screen)) {
        model.message = null;
        model.screen = "reading";
      }
      break;
    case "card":
      resetJourney();
      model.card = {
        card_masked: frame.card_masked,
        balance_minor: frame.balance_minor,
        bound_card_last4: frame.bound_card_last4 ?? null,
        amounts_minor: Array.isArray(frame.amounts_minor) ? frame.amounts_minor : [],
        unfinished_topup: frame.unfinished_topup ?? null,
        fresh_binding: false,
      };
      model.message = null;
      model.screen = "card";
      break;
    case "not_admitted":
      resetJourney();
      showProblem("admission", reasonOf(frame.reason).code);
      break;
    case "read_failed": {
      const { code } = reasonOf(frame.reason);
      if (model.screen === "bind-tap" || model.bankPhase) {
        model.bankPhase = null; // the person may read again or type the number
        model.screen = "bind-tap";
        model.message = { kind: "read_bank", code, tone: "error" };
      } else {
        showProblem("read", code);
      }
      break;
    }
    case "bank_card_read":
      model.bankLast4 = frame.card_last4;
      model.bankPhase = null;
      model.typedNumber = "";
      model.message = null;
      model.screen = "bind-phone";
      break;
    case "code_sent":
      model.codeSent = {
        phone_masked: frame.phone_masked,
        attempts_left: frame.attempts_left,
        code_expires_at: frame.code_expires_at,
      };
      model.code = "";
      model.message = null;
      model.screen = "bind-code";
      break;
    case "bound":
      if (model.card) {
        model.card.bound_card_last4 = frame.card_last4;
        model.card.fresh_binding = true;
      }
      model.bankLast4 = null;
      model.bankPhase = null;
      model.typedNumber = "";
      model.phone = "";
      model.code = "";
      model.codeSent = null;
      model.message = { kind: "info", code: "bound", vars: { last4: frame.card_last4 }, tone: "ok" };
      model.screen = model.card ? "card" : "tap";
      break;
    case "binding_failed":
      onBindingFailed(reasonOf(frame.reason));
      break;
    case "top_up_refused": {
      const { code } = reasonOf(frame.reason);
      model.amount = null;
      if (code === "not_bound" && model.card) model.card.bound_card_last4 = null;
      if (TOP_UP_ENDS.has(code) || !model.card) {
        showProblem("refusal", code);
      } else {
        model.screen = "card";
        model.message = { kind: "refusal", code, tone: "error" };
      }
      break;
    }
    case "progress":
      model.topupId = frame.topup_id;
      model.stage = frame.stage;
      model.message = null;
      model.screen = "progress";
      break;
    case "completed":
      model.topupId = frame.topup_id;
      model.stage = "done";
      model.completed = {
        amount_minor: frame.amount_minor,
        new_balance_minor: frame.new_balance_minor,
        tac: frame.tac,
        card_masked: model.card ? model.card.card_masked : "",
      };
      if (model.card) {
        model.card.balance_minor = frame.new_balance_minor;
        model.card.unfinished_topup = null;
      }
      model.message = null;
      model.screen = "done";
      break;
    case "outcome": {
      model.topupId = frame.topup_id;
      const code = reasonOf(frame.outcome).code;
      const tone = ["declined", "refunded", "refunding"].includes(code) ? "info" : "warn";
      showProblem("outcome", code, {}, tone);
      if (model.card) model.card.unfinished_topup = null;
      // Tap again: the server waits for the card itself (any tap on this kiosk finishes the
      // write), so the words stay up and nothing is sent.
      if (code === "tap_again") model.armed = true;
      break;
    }
    case "refused": {
      const { code } = reasonOf(frame.reason);
      if (code === "not_a_demo_terminal") {
        model.message = { kind: "refused", code, tone: "warn" }; // the journey goes on
        break;
      }
      model.armed = false;
      if (TERMINAL_REFUSALS.has(code)) {
        model.refusal = code;
        resetJourney();
        model.screen = "unavailable";
        model.message = { kind: "refused", code, tone: "error" };
      } else {
        showProblem("refused", code, {}, "warn");
      }
      break;
    }
    default:
      console.warn("kiosk: unknown frame", frame.type);
  }
}

function onBindingFailed({ code, vars }) {
  const message = { kind: "binding", code, vars, tone: "error" };
  if (BINDING_ENDS.has(code)) {
    showProblem("binding", code, vars);
    return;
  }
  model.message = message;
  switch (code) {
    case "wrong_code":
      model.code = "";
      if (model.codeSent && Number.isInteger(vars.attempts_left)) {
        model.codeSent.attempts_left = vars.attempts_left;
      }
      model.screen = "bind-code";
      break;
    case "expired":
      model.code = "";
      model.screen = "bind-code";
      break;
    case "bad_card_number":
      model.screen = "bind-number";
      break;
    case "bad_phone":
    case "bank_refused":
      model.screen = "bind-phone";
      break;
    default:
      // bank_unavailable, unavailable: the person stays where they are and may try again.
      if (!model.screen.startsWith("bind-")) model.screen = model.card ? "card" : "problem";
  }
}

// ---------------------------------------------------------------- touches

function onAction(action, target) {
  switch (action) {
    case "lang":
      return; // i18n.js switches the language ([data-lang-switch]); render follows the event
    case "again":
    case "cancel": {
      const refused = model.refusal !== null;
      model.refusal = null;
      model.armed = false;
      model.pending = null;
      resetJourney();
      model.message = null;
      model.screen = "tap";
      if (refused && !model.view && socket) {
        socket.close(); // refused before any state: ask again on a new connection
        model.screen = "connecting";
        return;
      }
      settle();
      return;
    }
    case "bind":
      if (!model.card) return;
      model.message = null;
      model.bankLast4 = null;
      model.typedNumber = "";
      model.phone = "";
      model.code = "";
      model.codeSent = null;
      model.bankPhase = "waiting";
      model.screen = "bind-tap";
      send({ type: "read_bank_card" });
      return;
    case "read-bank-card":
      model.message = null;
      model.typedNumber = "";
      model.bankPhase = "waiting";
      model.screen = "bind-tap";
      send({ type: "read_bank_card" });
      return;
    case "type-number":
      model.message = null;
      model.bankPhase = null;
      model.screen = "bind-number";
      return;
    case "submit-number":
      if (!numberReady()) return;
      if (!luhnValid(model.typedNumber)) {
        model.message = { kind: "binding", code: "bad_card_number", tone: "error" };
        return;
      }
      model.bankLast4 = null;
      model.message = null;
      model.screen = "bind-phone";
      return;
    case "submit-phone": {
      if (!phoneReady()) return;
      const frame = { type: "start_binding", phone: phoneToSend(model.phone) };
      if (model.typedNumber) frame.card_number = model.typedNumber;
      model.message = null;
      if (send(frame)) model.pending = "start_binding";
      return;
    }
    case "submit-code":
      if (!codeReady()) return;
      model.message = null;
      if (send({ type: "confirm_code", code: model.code })) model.pending = "confirm_code";
      return;
    case "resend":
      model.code = "";
      model.message = null;
      if (send({ type: "resend_code" })) model.pending = "resend_code";
      return;
    case "amount": {
      const amount = Number(target.dataset.amount);
      if (!amountAllowed(amount)) return;
      model.amount = amount;
      model.message = null;
      model.screen = "confirm";
      return;
    }
    case "back":
      model.amount = null;
      model.message = null;
      model.screen = "card";
      return;
    case "confirm":
      if (model.amount === null || model.screen !== "confirm") return;
      if (send({ type: "top_up", amount_minor: model.amount })) {
        model.stage = "";
        model.topupId = null;
        model.message = null;
        model.screen = "progress";
      }
      return;
    case "demo-tap":
      if (target.dataset.card) send({ type: "demo_tap", card: target.dataset.card });
      return;
    case "demo-remove":
      send({ type: "demo_remove" });
      return;
    default:
      console.warn("kiosk: unknown action", action);
  }
}

function onKey(key) {
  const pad = KEYPAD[model.screen];
  if (!pad) return;
  const value = model[pad.field];
  if (key === "del") {
    model[pad.field] = value.slice(0, -1);
  } else if (key === "clear") {
    model[pad.field] = "";
  } else if (/^[0-9]$/.test(key) && value.length < pad.max) {
    model[pad.field] = value + key;
  }
  if (model.message && model.message.tone === "error") model.message = null;
}

function numberReady() {
  return model.typedNumber.length >= 13 && model.typedNumber.length <= 19;
}

function phoneReady() {
  return model.phone.length >= 6 && model.phone.length <= 15;
}

function codeReady() {
  return model.code.length === 6;
}

/** The card's amounts, or after a binding made here (the card was read unbound) the kiosk's. */
function allowedAmounts() {
  const card = model.card;
  if (!card || !card.bound_card_last4 || card.unfinished_topup) return [];
  if (card.fresh_binding && card.amounts_minor.length === 0 && model.view) {
    return model.view.amounts_minor; // the server still checks every rule (R3.4)
  }
  return card.amounts_minor;
}

function amountAllowed(amount) {
  return Number.isInteger(amount) && allowedAmounts().includes(amount);
}

// ---------------------------------------------------------------- rendering

const $ = (id) => document.getElementById(id);

function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function messageText(message) {
  const vars = { ...(message.vars || {}) };
  if (message.code === "wrong_code" && vars.attempts_left === undefined && model.codeSent) {
    vars.attempts_left = model.codeSent.attempts_left;
  }
  const key = `kiosk.${message.kind}.${message.code}`;
  const text = t(key, vars);
  // An unknown code (a newer server) still gets words, and its code for staff.
  return text === key ? t(`kiosk.${message.kind}.unknown`, { code: message.code }) : text;
}

function render() {
  const root = document.documentElement;
  const screen = SCREENS.includes(model.screen) ? model.screen : "problem";
  root.dataset.kioskScreen = screen;
  root.dataset.kioskConnected = String(model.connected);
  for (const section of document.querySelectorAll(".kiosk-screen")) {
    const shown = section.dataset.screen === screen;
    section.hidden = !shown;
    // Only the shown screen's buttons carry their action, so that `[data-kiosk-action="again"]`
    // names one button: the one a person can see.
    for (const button of section.querySelectorAll("[data-screen-action]")) {
      if (shown) button.dataset.kioskAction = button.dataset.screenAction;
      else delete button.dataset.kioskAction;
    }
  }

  // The terminal's name in the header.
  setText("kiosk-terminal", model.view ? model.view.terminal_name : "");
  setText("kiosk-connecting-text", t(model.reconnecting ? "kiosk.reconnecting" : "kiosk.connecting"));
  // The server reads each tap once: a card left on the reader must be taken off and tapped again.
  $("kiosk-tap-present").hidden = !(model.view && model.view.card_present);

  renderMessage();
  renderCard();
  renderBinding(screen);
  renderConfirm();
  renderProgress();
  renderDone();
  renderDemoTray();
  scheduleIdle(screen);
}

function renderMessage() {
  const el = $("kiosk-message");
  const message = model.message;
  if (!message) {
    el.hidden = true;
    el.textContent = "";
    el.dataset.code = "";
    el.dataset.kind = "";
    el.dataset.tone = "";
    return;
  }
  el.textContent = messageText(message);
  el.dataset.code = message.code;
  el.dataset.kind = message.kind;
  el.dataset.tone = message.tone || "error";
  el.hidden = false;
}

function renderCard() {
  const card = model.card;
  setText("kiosk-card", card ? card.card_masked : "");
  setText("kiosk-balance", card ? money(card.balance_minor, currency()) : "");
  const last4 = card && card.bound_card_last4 ? card.bound_card_last4 : "";
  setText("kiosk-bound", last4);
  $("kiosk-bound-mask").hidden = !last4;
  $("kiosk-not-bound").hidden = !card || Boolean(last4);
  $("kiosk-unfinished").hidden = !(card && card.unfinished_topup);
  $("kiosk-bind-offer").hidden = !card || Boolean(last4) || Boolean(card.unfinished_topup);

  const block = $("kiosk-amounts-block");
  block.hidden = !card || !last4 || Boolean(card.unfinished_topup);
  const offered = model.view ? model.view.amounts_minor : [];
  const allowed = allowedAmounts();
  // The kiosk's amounts in order, then any the card allows that the kiosk did not list.
  const amounts = [...offered, ...allowed.filter((a) => !offered.includes(a))];
  const key = `${currentLang()}|${currency()}|${amounts.join(",")}|${allowed.join(",")}`;
  const container = $("kiosk-amounts");
  if (container.dataset.rendered !== key) {
    container.dataset.rendered = key;
    container.replaceChildren(...amounts.map((amount) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "kiosk-button kiosk-amount";
      button.dataset.kioskAction = "amount";
      button.dataset.amount = String(amount);
      button.textContent = money(amount, currency());
      const ok = allowed.includes(amount);
      button.disabled = !ok;
      if (!ok) button.title = t("kiosk.amount_not_now");
      return button;
    }));
  }
  $("kiosk-amounts-note").hidden = allowed.length === 0 || allowed.length === amounts.length;
  $("kiosk-no-amounts").hidden = allowed.length !== 0;
}

function renderBinding(screen) {
  // Bank card tap.
  const status = model.bankPhase === "reading" ? t("kiosk.bank_reading")
    : model.bankPhase === "waiting" ? t("kiosk.bank_waiting") : "";
  setText("kiosk-bank-status", status);
  $("kiosk-bank-status").dataset.phase = model.bankPhase || "";

  // Keypad displays.
  setText("kiosk-number", groups(model.typedNumber));
  setText("kiosk-phone", model.phone);
  setText("kiosk-phone-prefix", model.phone.startsWith("86") && model.phone.length === 13 ? "+" : PHONE_PREFIX);
  setText("kiosk-code", model.code);
  const keypad = $("kiosk-keypad");
  const pad = KEYPAD[screen];
  keypad.hidden = !pad;
  if (pad) {
    // One keypad, moved into the screen that uses it: under the display, above the buttons.
    const section = document.querySelector(`.kiosk-screen[data-screen="${screen}"]`);
    const buttons = section && section.querySelector(".kiosk-buttons");
    if (buttons && keypad.nextElementSibling !== buttons) section.insertBefore(keypad, buttons);
    const full = model[pad.field].length >= pad.max;
    for (const key of keypad.querySelectorAll("[data-key]")) {
      const k = key.dataset.key;
      key.disabled = /^[0-9]$/.test(k) ? full : model[pad.field].length === 0;
    }
  }
  const idle = model.pending === null;
  for (const [action, ready] of [
    ["submit-number", numberReady()],
    ["submit-phone", phoneReady() && idle],
    ["submit-code", codeReady() && idle],
    ["resend", idle],
  ]) {
    for (const button of document.querySelectorAll(`[data-kiosk-action="${action}"]`)) {
      button.disabled = !ready;
    }
  }
  document.querySelector(".kiosk-main").setAttribute("aria-busy", String(!idle));

  // Which bank card the phone is for.
  const cardLine = model.bankLast4
    ? t("kiosk.bank_card_read", { last4: model.bankLast4 })
    : model.typedNumber
      ? t("kiosk.bank_card_typed", { last4: model.typedNumber.slice(-4) })
      : "";
  setText("kiosk-bank-card-line", cardLine);
  $("kiosk-bank-card-line").hidden = !cardLine;

  // The code that was sent.
  const sent = model.codeSent;
  setText("kiosk-code-sent", sent ? t("kiosk.code_sent", { phone: sent.phone_masked }) : "");
  setText("kiosk-code-attempts", sent ? t("kiosk.code_attempts", { n: sent.attempts_left }) : "");
  setText("kiosk-code-expiry", sent ? t("kiosk.code_expires_at", { time: expiryTime(sent.code_expires_at) }) : "");
}

function renderConfirm() {
  const last4 = model.card && model.card.bound_card_last4 ? model.card.bound_card_last4 : "";
  setText("kiosk-confirm-question", model.amount === null ? ""
    : t("kiosk.confirm_question", { amount: money(model.amount, currency()), last4 }));
}

const STAGES = ["reading_card", "debiting_bank", "writing_card", "done"];

function renderProgress() {
  const list = $("kiosk-stage");
  list.dataset.stage = model.stage || "";
  const current = STAGES.indexOf(model.stage);
  for (const item of list.querySelectorAll("[data-stage-item]")) {
    const index = STAGES.indexOf(item.dataset.stageItem);
    const state = current < 0 ? "todo"
      : index < current || model.stage === "done" ? "done"
        : index === current ? "active" : "todo";
    item.dataset.state = state;
    if (state === "active") item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
  }
}

function renderDone() {
  const done = model.completed;
  setText("kiosk-done-amount", done ? money(done.amount_minor, currency()) : "");
  setText("kiosk-new-balance", done ? money(done.new_balance_minor, currency()) : "");
  setText("kiosk-tac", done ? done.tac : "");
  setText("kiosk-receipt-card", done ? done.card_masked : "");
  setText("kiosk-reference", model.topupId && done ? model.topupId : "");
}

function renderDemoTray() {
  const tray = $("kiosk-demo-tray");
  const view = model.view;
  const cards = model.connected && view && view.demo_reader && !model.refusal ? view.demo_cards || [] : null;
  tray.hidden = cards === null;
  if (cards === null) return;
  const container = $("kiosk-demo-cards");
  const key = `${currentLang()}|${cards.join("|")}`;
  if (container.dataset.rendered === key) return;
  container.dataset.rendered = key;
  const buttons = cards.map((card) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cb-button cb-demo-card";
    button.dataset.kioskAction = "demo-tap";
    button.dataset.card = card;
    button.textContent = t("kiosk.demo_card", { card });
    return button;
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "cb-button cb-demo-remove";
  remove.dataset.kioskAction = "demo-remove";
  remove.textContent = t("kiosk.demo_remove");
  container.replaceChildren(...buttons, remove);
}

// ---------------------------------------------------------------- idle: back to the start

function scheduleIdle(screen) {
  if (idleTimer !== null) clearTimeout(idleTimer);
  idleTimer = null;
  const ms = IDLE_MS[screen];
  if (!ms || !model.connected) return;
  idleTimer = setTimeout(() => {
    idleTimer = null;
    // Not while the server is still answering a request (the screen would have changed).
    if (model.screen === screen) {
      onAction("again");
      render();
    }
  }, ms);
}

// ---------------------------------------------------------------- wiring

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target) return;
  const key = target.closest("[data-key]");
  if (key && !key.disabled) {
    onKey(key.dataset.key);
    render();
    return;
  }
  const control = target.closest("[data-kiosk-action]");
  if (!control || control.disabled) return;
  onAction(control.dataset.kioskAction, control);
  render();
});

// A hardware keypad or keyboard works too (digits, Backspace, Enter), though none is needed.
document.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const pad = KEYPAD[model.screen];
  if (!pad) return;
  if (/^[0-9]$/.test(event.key)) onKey(event.key);
  else if (event.key === "Backspace") onKey("del");
  else if (event.key === "Escape") onKey("clear");
  else if (event.key === "Enter") {
    const submit = { "bind-number": "submit-number", "bind-phone": "submit-phone", "bind-code": "submit-code" }[model.screen];
    onAction(submit, document.activeElement);
  } else return;
  event.preventDefault();
  render();
});

// Any touch keeps the journey alive.
document.addEventListener("pointerdown", () => scheduleIdle(model.screen), { passive: true });

onLangChange(() => render());

// The screens' own buttons keep their action in data-screen-action; render() shows it on the
// buttons of the screen in view only.
for (const button of document.querySelectorAll(".kiosk-screen [data-kiosk-action]")) {
  button.dataset.screenAction = button.dataset.kioskAction;
}

render();
connect();
