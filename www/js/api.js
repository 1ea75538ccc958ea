// JSON calls to the bank's /api. Failures become ApiFailure with the server's stable error code,
// so pages can show a translated message.
import { t } from "/js/i18n.js";

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** `method path` with an optional JSON body; resolves to the parsed JSON body (or null). */
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiFailure(0, "network", "");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const code = data && typeof data.code === "string" ? data.code : "http_" + response.status;
    const message = data && typeof data.message === "string" ? data.message : "";
    throw new ApiFailure(response.status, code, message);
  }
  return data;
}

/** A message for the user: translated for the codes the pages know, else the server's message. */
export function describe(error) {
  if (error instanceof ApiFailure) {
    const known = {
      invalid_credentials: "error.invalid_credentials",
      too_many_attempts: "error.too_many_attempts",
      network: "error.network",
    };
    if (known[error.code]) return t(known[error.code]);
    if (error.status === 401) return t("error.unauthorized");
    if (error.message) return error.message;
    if (error.status === 403) return t("error.forbidden");
  }
  return t("error.generic");
}

/** Create an element with a class and text; never parses HTML. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Show `message` in an alert element, or hide it when `message` is empty. */
export function showAlert(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}
