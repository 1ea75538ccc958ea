// Sign-in: POST /api/login, then go to the page of the user's role.
import { t, onLangChange } from "/js/i18n.js";
import { api, describe, showAlert } from "/js/api.js";

const HOME = { cardholder: "/cardholder.html", staff: "/desk.html", admin: "/admin.html" };

const form = document.getElementById("login-form");
const username = document.getElementById("username");
const password = document.getElementById("password");
const submit = document.getElementById("login-submit");
const error = document.getElementById("login-error");
let lastFailure = null;

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!username.value.trim() || !password.value) {
    lastFailure = "missing";
    showAlert(error, t("login.missing"));
    return;
  }
  lastFailure = null;
  showAlert(error, "");
  submit.disabled = true;
  submit.setAttribute("aria-busy", "true");
  try {
    const me = await api("POST", "/api/login", { username: username.value.trim(), password: password.value });
    location.assign(HOME[me.role] || "/cardholder.html");
  } catch (failure) {
    lastFailure = failure;
    showAlert(error, describe(failure));
    error.dataset.code = failure.code || "";
    password.select();
  } finally {
    submit.disabled = false;
    submit.removeAttribute("aria-busy");
  }
});

onLangChange(() => {
  if (lastFailure === "missing") showAlert(error, t("login.missing"));
  else if (lastFailure) showAlert(error, describe(lastFailure));
});
