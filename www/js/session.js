// The signed-in user on the app pages: who is shown in the header, sign-out, and the terminal
// this browser is paired with. Without a session the page goes back to the sign-in page.
import { t, onLangChange } from "/js/i18n.js";
import { api, ApiFailure } from "/js/api.js";

function render(me) {
  for (const node of document.querySelectorAll("[data-user-name]")) {
    node.textContent = me.username;
  }
  for (const node of document.querySelectorAll("[data-user-role]")) {
    node.textContent = t("role." + me.role);
  }
  for (const node of document.querySelectorAll("[data-user]")) {
    node.hidden = false;
  }
  const terminal = document.getElementById("terminal-name");
  if (terminal) {
    terminal.replaceChildren();
    if (me.terminal) {
      const label = document.createElement("span");
      label.textContent = t("terminal.paired") + " ";
      const name = document.createElement("strong");
      name.textContent = me.terminal.name;
      terminal.append(label, name);
      terminal.dataset.terminalId = me.terminal.terminal_id;
    } else {
      terminal.textContent = t("terminal.unpaired");
      delete terminal.dataset.terminalId;
    }
  }
}

/** Load the session (GET /api/me) and wire the sign-out button; resolves to `Me`. */
export async function loadSession() {
  for (const button of document.querySelectorAll("[data-logout]")) {
    button.addEventListener("click", async () => {
      try {
        await api("POST", "/api/logout");
      } finally {
        location.assign("/");
      }
    });
  }
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (error) {
    if (error instanceof ApiFailure && error.status === 401) {
      location.assign("/");
    }
    throw error;
  }
  render(me);
  onLangChange(() => render(me));
  return me;
}
