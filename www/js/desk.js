// The branch desk: the same read form as the cardholder page, with the staff view of the result
// (every field, presented as a customer lookup).
import "/js/i18n.js";
import { loadSession } from "/js/session.js";
import { setupQueryForm } from "/js/query.js";

setupQueryForm({ staff: true });
loadSession().catch((error) => console.warn("session:", error));
