// Every visible string of the pages, in Simplified Chinese and English.
//
// Elements carry data-i18n="key" (text), data-i18n-placeholder, data-i18n-title or
// data-i18n-aria-label. The language comes from localStorage "cb-lang", else from the browser. The
// [data-lang-switch] button toggles it, sets <html lang>, re-translates the page and dispatches
// "cardbridge:lang" on document, on which the page module re-renders its own texts.

const STORAGE_KEY = "cb-lang";
export const LANGS = ["zh-CN", "en"];

const STRINGS = {
  en: {
    "brand": "Cardbridge Bank",
    "lang.switch": "中文",
    "lang.switch_label": "切换到中文",
    "nav.signed_in_as": "Signed in as",
    "nav.logout": "Sign out",
    "footer.note": "Cardbridge Bank · card reading by the bank's server through your local card terminal",
    "role.cardholder": "cardholder",
    "role.staff": "branch staff",
    "role.admin": "administrator",

    "login.title": "Sign in — Cardbridge Bank",
    "login.heading": "Sign in to online banking",
    "login.intro": "Sign in, then tap your card on the reader next to this PC: the card number is read and sent for you.",
    "login.username": "User name",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.missing": "Enter your user name and password",
    "error.invalid_credentials": "User name or password is incorrect",
    "error.too_many_attempts": "Too many attempts. Wait a few minutes, then try again",
    "error.network": "The bank could not be reached. Check your connection and try again",
    "error.unauthorized": "Your session has ended. Please sign in again",
    "error.forbidden": "You are not allowed to do this",
    "error.generic": "Something went wrong",

    "terminal.heading": "Card terminal",
    "terminal.paired": "This PC's card terminal:",
    "terminal.unpaired": "This browser is not paired with a card terminal. Open the pairing link shown by the card agent on this PC.",
    "terminal.starting": "Starting the card module…",
    "terminal.help": "The bank reads the card through the terminal of this PC, with your permission. Nothing is read until you allow it.",

    "cardholder.title": "Card services — Cardbridge Bank",
    "cardholder.heading": "Card services",
    "desk.title": "Branch desk — Cardbridge Bank",
    "desk.heading": "Branch desk",
    "desk.intro": "Ask the customer to tap their card on the desk reader. The number fills itself in and the lookup starts.",

    "query.heading": "Card query",
    "query.request": "What would you like to see?",
    "query.card_number": "Card number",
    "query.card_number_placeholder": "Tap your card, or type the number",
    "query.hint": "Tap the card on the reader and the number is filled in and sent for you. A typed number shows a masked summary only.",
    "query.submit": "Look up",
    "query.missing": "Tap a card or enter a card number",
    "request.balance": "Balance",
    "request.transactions": "Recent transactions",
    "request.details": "Card details",

    "result.heading": "Result",
    "result.customer_lookup": "Customer lookup",
    "result.card": "Card",
    "result.brand": "Brand",
    "result.request": "Request",
    "result.source": "Card number source",
    "result.source_read": "Read on the terminal",
    "result.source_typed": "Typed",
    "result.disclosure": "Disclosure",
    "result.disclosure_full": "Full",
    "result.disclosure_masked": "Masked summary only",
    "result.masked_not_tapped": "Only a masked summary is shown for a typed number. Tap the card on the reader to see everything.",
    "result.masked_card_not_authenticated": "This card could not be authenticated (it was not issued by this bank, or it did not prove itself to the bank), so only a masked summary is shown.",
    "result.masked_other_terminal": "Only a masked summary is shown for a card tapped on another terminal. Tap the card on this PC's reader to see everything.",
    "result.holder": "Card holder",
    "result.card_type": "Card type",
    "result.issuer": "Issuer",
    "result.expiry": "Valid until",
    "result.status": "Card status",
    "result.balance": "Available balance",
    "result.transactions": "Transactions",
    "result.tx_at": "Date",
    "result.tx_description": "Description",
    "result.tx_amount": "Amount",
    "result.no_transactions": "No transactions",
    "result.nothing": "Nothing to show for this request",

    "admin.title": "Administration — Cardbridge Bank",
    "admin.heading": "Card terminals",
    "admin.intro": "Switch card reading on or off per terminal, revoke terminals and browser pairings, and enrol new terminals. The list refreshes every 2 seconds.",
    "admin.col_terminal": "Terminal",
    "admin.col_agent": "Agent",
    "admin.col_permission": "Permission",
    "admin.col_policy": "Local policy",
    "admin.col_readers": "Readers",
    "admin.col_pairings": "Browser pairings",
    "admin.col_actions": "Actions",
    "admin.online": "online",
    "admin.offline": "offline",
    "admin.not_enrolled": "not enrolled",
    "admin.revoked": "revoked",
    "admin.permitted": "reading allowed",
    "admin.forbidden": "reading switched off",
    "admin.permit": "Allow reading",
    "admin.forbid": "Switch off reading",
    "admin.revoke": "Revoke",
    "admin.revoke_pairing": "Revoke pairing",
    "admin.read_only": "read-only",
    "admin.read_write": "read and write",
    "admin.all_readers": "all readers",
    "admin.allowed_readers": "allowed readers:",
    "admin.no_readers": "no readers",
    "admin.no_pairings": "no pairings",
    "admin.paired_at": "paired",
    "admin.backend": "backend",
    "admin.reader_empty": "empty",
    "admin.reader_card_present": "card present",
    "admin.reader_unavailable": "unavailable",
    "admin.no_terminals": "No terminals yet. Create one below.",
    "admin.updated": "Updated",
    "admin.load_failed": "The terminal list could not be loaded",
    "admin.create_heading": "Enrol a new terminal",
    "admin.create_intro": "Create the terminal here, then run the command below on the PC with the card reader within 15 minutes. The code works once.",
    "admin.create_name": "Terminal name",
    "admin.create_name_placeholder": "e.g. Branch 12 desk 3",
    "admin.create_submit": "Create terminal",
    "admin.created": "Terminal created. Enrolment code:",
    "admin.created_expires": "Valid until",
    "admin.created_command": "Run on the terminal PC:",
    "admin.copy": "Copy command",
    "admin.copied": "Copied",
    "admin.audit_heading": "Audit log",
    "admin.audit_intro": "Every permission change, consent, pairing and read, newest first.",
    "admin.audit_at": "Time",
    "admin.audit_actor": "Actor",
    "admin.audit_action": "Action",
    "admin.audit_subject": "Subject",
    "admin.audit_detail": "Detail",
    "admin.audit_empty": "No entries yet",
    "admin.audit_older": "Older entries",
  },
  "zh-CN": {
    "brand": "卡桥银行",
    "lang.switch": "English",
    "lang.switch_label": "Switch to English",
    "nav.signed_in_as": "当前用户",
    "nav.logout": "退出登录",
    "footer.note": "卡桥银行 · 由银行服务器通过本机读卡终端读卡",
    "role.cardholder": "持卡人",
    "role.staff": "网点柜员",
    "role.admin": "管理员",

    "login.title": "登录 — 卡桥银行",
    "login.heading": "登录网上银行",
    "login.intro": "登录后，将银行卡放到本机旁的读卡器上：卡号会自动读取并提交。",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.missing": "请输入用户名和密码",
    "error.invalid_credentials": "用户名或密码错误",
    "error.too_many_attempts": "尝试次数过多，请几分钟后再试",
    "error.network": "无法连接银行服务器，请检查网络后重试",
    "error.unauthorized": "会话已结束，请重新登录",
    "error.forbidden": "您无权执行此操作",
    "error.generic": "操作失败",

    "terminal.heading": "读卡终端",
    "terminal.paired": "本机读卡终端：",
    "terminal.unpaired": "此浏览器尚未与读卡终端配对。请打开本机读卡助手显示的配对链接。",
    "terminal.starting": "正在启动读卡模块…",
    "terminal.help": "经您许可后，银行通过本机的读卡终端读取卡片。未经许可不会读卡。",

    "cardholder.title": "银行卡服务 — 卡桥银行",
    "cardholder.heading": "银行卡服务",
    "desk.title": "网点柜台 — 卡桥银行",
    "desk.heading": "网点柜台",
    "desk.intro": "请客户将银行卡放到柜台读卡器上。卡号会自动填入并开始查询。",

    "query.heading": "银行卡查询",
    "query.request": "您要查询什么？",
    "query.card_number": "卡号",
    "query.card_number_placeholder": "请刷卡，或手动输入卡号",
    "query.hint": "在读卡器上刷卡即可自动填入卡号并提交。手动输入的卡号只显示脱敏摘要。",
    "query.submit": "查询",
    "query.missing": "请刷卡或输入卡号",
    "request.balance": "余额",
    "request.transactions": "近期交易",
    "request.details": "卡片信息",

    "result.heading": "查询结果",
    "result.customer_lookup": "客户查询",
    "result.card": "卡号",
    "result.brand": "卡组织",
    "result.request": "查询内容",
    "result.source": "卡号来源",
    "result.source_read": "终端读卡",
    "result.source_typed": "手动输入",
    "result.disclosure": "披露范围",
    "result.disclosure_full": "完整",
    "result.disclosure_masked": "仅脱敏摘要",
    "result.masked_not_tapped": "手动输入的卡号只显示脱敏摘要。在读卡器上刷卡可查看全部信息。",
    "result.masked_card_not_authenticated": "此卡未通过认证（非本行发行，或未能向本行证明其真实性），因此只显示脱敏摘要。",
    "result.masked_other_terminal": "在其他终端刷过的卡只显示脱敏摘要。请在本机读卡器上刷卡以查看全部信息。",
    "result.holder": "持卡人",
    "result.card_type": "卡种",
    "result.issuer": "发卡行",
    "result.expiry": "有效期至",
    "result.status": "卡片状态",
    "result.balance": "可用余额",
    "result.transactions": "交易记录",
    "result.tx_at": "日期",
    "result.tx_description": "摘要",
    "result.tx_amount": "金额",
    "result.no_transactions": "暂无交易",
    "result.nothing": "此查询没有可显示的内容",

    "admin.title": "系统管理 — 卡桥银行",
    "admin.heading": "读卡终端",
    "admin.intro": "按终端开启或关闭读卡权限、注销终端和浏览器配对、登记新终端。列表每 2 秒刷新一次。",
    "admin.col_terminal": "终端",
    "admin.col_agent": "读卡助手",
    "admin.col_permission": "读卡权限",
    "admin.col_policy": "本地策略",
    "admin.col_readers": "读卡器",
    "admin.col_pairings": "浏览器配对",
    "admin.col_actions": "操作",
    "admin.online": "在线",
    "admin.offline": "离线",
    "admin.not_enrolled": "未登记",
    "admin.revoked": "已注销",
    "admin.permitted": "允许读卡",
    "admin.forbidden": "已关闭读卡",
    "admin.permit": "开启读卡",
    "admin.forbid": "关闭读卡",
    "admin.revoke": "注销",
    "admin.revoke_pairing": "注销配对",
    "admin.read_only": "只读",
    "admin.read_write": "可读写",
    "admin.all_readers": "全部读卡器",
    "admin.allowed_readers": "允许的读卡器：",
    "admin.no_readers": "无读卡器",
    "admin.no_pairings": "无配对",
    "admin.paired_at": "配对于",
    "admin.backend": "后端",
    "admin.reader_empty": "无卡",
    "admin.reader_card_present": "有卡",
    "admin.reader_unavailable": "不可用",
    "admin.no_terminals": "尚无终端。请在下方创建。",
    "admin.updated": "更新于",
    "admin.load_failed": "无法加载终端列表",
    "admin.create_heading": "登记新终端",
    "admin.create_intro": "在此创建终端，然后在 15 分钟内于连接读卡器的电脑上运行下面的命令。登记码只能使用一次。",
    "admin.create_name": "终端名称",
    "admin.create_name_placeholder": "例如：第 12 网点 3 号柜台",
    "admin.create_submit": "创建终端",
    "admin.created": "终端已创建。登记码：",
    "admin.created_expires": "有效期至",
    "admin.created_command": "在终端电脑上运行：",
    "admin.copy": "复制命令",
    "admin.copied": "已复制",
    "admin.audit_heading": "审计日志",
    "admin.audit_intro": "所有权限变更、许可、配对和读卡记录，最新的在前。",
    "admin.audit_at": "时间",
    "admin.audit_actor": "操作人",
    "admin.audit_action": "操作",
    "admin.audit_subject": "对象",
    "admin.audit_detail": "详情",
    "admin.audit_empty": "暂无记录",
    "admin.audit_older": "更早的记录",
  },
};

function normalise(tag) {
  return String(tag || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage disabled: follow the browser
  }
}

/** The page language: "zh-CN" or "en". */
export function currentLang() {
  return normalise(document.documentElement.lang || stored() || navigator.language);
}

/** The text for `key` in the current language; `{name}` placeholders are filled from `vars`. */
export function t(key, vars = {}) {
  const lang = currentLang();
  const text = STRINGS[lang][key] ?? STRINGS.en[key];
  if (text === undefined) {
    console.warn("i18n: no text for", key);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** Translate every marked element under `root`. */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const [attribute, data] of [
    ["placeholder", "i18nPlaceholder"],
    ["title", "i18nTitle"],
    ["aria-label", "i18nAriaLabel"],
  ]) {
    const selector = "[data-" + data.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()) + "]";
    for (const el of root.querySelectorAll(selector)) {
      el.setAttribute(attribute, t(el.dataset[data]));
    }
  }
}

/** Switch the page to `lang`, remember it, re-translate, and tell the page module. */
export function setLang(lang) {
  const next = normalise(lang);
  document.documentElement.lang = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // Not remembered; the switch still applies to this page.
  }
  translate();
  document.dispatchEvent(new CustomEvent("cardbridge:lang", { detail: { lang: next } }));
}

/** Run `callback` after every language switch (for texts a page renders itself). */
export function onLangChange(callback) {
  document.addEventListener("cardbridge:lang", callback);
}

function setup() {
  document.documentElement.lang = normalise(stored() || navigator.language);
  translate();
  for (const button of document.querySelectorAll("[data-lang-switch]")) {
    button.addEventListener("click", () => setLang(currentLang() === "zh-CN" ? "en" : "zh-CN"));
  }
}

setup();
