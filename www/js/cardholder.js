// The cardholder page: who is signed in, the card query form and its result. The terminal status,
// consent question and demo tray are rendered by the page module (boot.js).
import "/js/i18n.js";
import { loadSession } from "/js/session.js";
import { setupQueryForm } from "/js/query.js";

setupQueryForm({ staff: false });
loadSession().catch((error) => console.warn("session:", error));
