// Loads the cardbridge page module (the "signed page module" of the design): the bindings come
// through <link rel="modulepreload" integrity=…>, the WebAssembly through fetch() with the
// integrity the server put into <meta name="cardbridge-wasm-integrity">, so the browser runs the
// module only if its bytes are exactly the ones this server vouches for.
import init, { start } from "/pkg/cardbridge_web.js";

const WASM = "/pkg/cardbridge_web_bg.wasm";

function failed(error) {
  console.error("cardbridge: the page module could not be started", error);
  const root = document.documentElement;
  root.setAttribute("data-cardbridge-state", "unavailable");
  const zh = (root.lang || "").toLowerCase().startsWith("zh");
  const text = zh
    ? "读卡模块无法加载，请刷新页面；您也可以手动输入卡号"
    : "The card module could not be loaded. Reload the page, or type the card number";
  for (const status of document.querySelectorAll('[data-cardbridge="status"]')) {
    status.textContent = text;
  }
}

try {
  const meta = document.querySelector('meta[name="cardbridge-wasm-integrity"]');
  const integrity = meta ? meta.content : "";
  if (!integrity.startsWith("sha384-")) {
    throw new Error("no integrity for " + WASM);
  }
  await init({ module_or_path: fetch(WASM, { integrity }) });
  start();
} catch (error) {
  failed(error);
}
