// What every section of the operator's console shares: badges and buttons, times and amounts in
// the page's language, a pager, a re-render that keeps keyboard focus on the same control, and
// the confirmation dialog (a <dialog>: modal, Escape cancels, focus starts on "Cancel").
import { t, currentLang } from "/js/i18n.js";
import { el } from "/js/api.js";

export function badge(kind, text) {
  return el("span", "badge badge-" + kind, text);
}

/** A small button that carries `data-action`; `extra` sets more data attributes. */
export function actionButton(action, text, className = "button button-small", extra = {}) {
  const button = el("button", className, text);
  button.type = "button";
  button.dataset.action = action;
  for (const [key, value] of Object.entries(extra)) button.dataset[key] = value;
  return button;
}

/** Unix milliseconds as a local date and time in the page's language. */
export function formatMs(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toLocaleString(currentLang(), { dateStyle: "short", timeStyle: "medium" });
}

/** The API's `YYYY-MM-DD HH:MM:SS` (UTC) as a local date and time. */
export function formatUtc(text) {
  if (!text) return "—";
  const ms = Date.parse(text.replace(" ", "T") + "Z");
  return Number.isNaN(ms) ? text : formatMs(ms);
}

export function yuan(minor) {
  const sign = minor < 0 ? "-" : "";
  return `${sign}¥${(Math.abs(minor) / 100).toFixed(2)}`;
}

/** Case-insensitive: does any of `fields` contain `needle` (already lower case)? */
export function matches(needle, ...fields) {
  if (!needle) return true;
  return fields.some((field) => field !== null && field !== undefined && String(field).toLowerCase().includes(needle));
}

/**
 * A pager under a list: previous, a label, next (`[data-page=prev|label|next]` in `root`).
 * `go(delta)` moves; `show({ hasPrev, hasNext, text })` hides the buttons with nowhere to go.
 */
export function pager(root, { go }) {
  const prev = root.querySelector("[data-page=prev]");
  const next = root.querySelector("[data-page=next]");
  const label = root.querySelector("[data-page=label]");
  prev.addEventListener("click", () => go(-1));
  next.addEventListener("click", () => go(1));
  return {
    show({ hasPrev, hasNext, text }) {
      // Keep focus on the pager when the button that had it disappears.
      const hadFocus = root.contains(document.activeElement);
      prev.hidden = !hasPrev;
      next.hidden = !hasNext;
      label.textContent = text || "";
      if (hadFocus && (document.activeElement === document.body || document.activeElement?.hidden)) {
        (hasNext ? next : hasPrev ? prev : label).focus?.();
      }
    },
  };
}

/**
 * Replace `container`'s children with `render()`, and put keyboard focus back on the control
 * that had it (matched by `key(element)`), so that a live update never throws the keyboard user
 * out of the table.
 */
export function rerender(container, render, key) {
  const active = document.activeElement;
  const focused = active && container.contains(active) ? key(active) : null;
  container.replaceChildren(...render());
  if (focused) {
    const again = [...container.querySelectorAll("button, a, input, select")].find((node) => key(node) === focused);
    if (again && !again.disabled) again.focus();
  }
}

const dialog = document.getElementById("confirm-dialog");

/**
 * Ask before doing something that cannot be undone. Resolves true only when the person chose the
 * confirming button; Escape, "Cancel" and closing all answer false.
 */
export function confirmAction({ title, message, confirm }) {
  if (dialog.open) return Promise.resolve(false);
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-message").textContent = message;
  dialog.querySelector("[data-confirm=yes]").textContent = confirm;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    dialog.querySelector("[data-confirm=no]").focus();
  });
}

/** Announce a change to screen readers (one polite live region for the page). */
export function announce(text) {
  const region = document.getElementById("console-announce");
  region.textContent = "";
  // A fresh text node so that the same message twice is read twice.
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}
