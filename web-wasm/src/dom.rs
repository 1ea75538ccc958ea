//! Everything the module does to the page: finding the marked elements, filling and clicking,
//! rendering status, consent question and demo tray, and reporting state on `<html>`.
//!
//! Elements are looked up by their `data-cardbridge` marks at each use, so pages may render their
//! forms late or replace them.

use wasm_bindgen::prelude::*;
use web_sys::{
    CustomEvent, CustomEventInit, Document, Element, Event, EventInit, HtmlElement,
    HtmlInputElement, Window,
};

use crate::state::{Action, Snapshot};
use crate::text::{self, Lang};
use js_sys::{Array, Object, Reflect};
use protocol::page::{CardKind, ConsentDecision};

const CARD_NUMBER: &str = "[data-cardbridge=\"card-number\"]";
const SUBMIT: &str = "[data-cardbridge=\"submit\"]";
const READ_ID: &str = "[data-cardbridge=\"read-id\"]";
const STATUS: &str = "[data-cardbridge=\"status\"]";
const CONSENT: &str = "[data-cardbridge=\"consent\"]";
const DEMO_TRAY: &str = "[data-cardbridge=\"demo-tray\"]";
/// Controls that turn a click into an [`Action`]: the module's own buttons and the page's arm buttons.
pub const ACTION_TARGETS: &str = "[data-cardbridge-action], [data-cardbridge=\"arm\"]";

/// The page the module lives in.
#[derive(Clone)]
pub struct Dom {
    window: Window,
    document: Document,
}

impl Dom {
    pub fn new() -> Result<Dom, JsValue> {
        let window = web_sys::window().ok_or("cardbridge: no window")?;
        let document = window.document().ok_or("cardbridge: no document")?;
        Ok(Dom { window, document })
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    pub fn document(&self) -> &Document {
        &self.document
    }

    fn root(&self) -> Result<Element, JsValue> {
        self.document
            .document_element()
            .ok_or_else(|| "cardbridge: no document element".into())
    }

    /// The language to render in, read from `<html lang>` now.
    pub fn lang(&self) -> Lang {
        match self.document.document_element() {
            Some(root) => Lang::from_tag(&root.get_attribute("lang").unwrap_or_default()),
            None => Lang::En,
        }
    }

    /// Pages opt out of arming on load with `data-cardbridge-auto-arm="off"` on any element
    /// (typically `<html>` or the card-number input); they then provide `[data-cardbridge="arm"]`.
    pub fn auto_arm(&self) -> Result<bool, JsValue> {
        Ok(self
            .document
            .query_selector("[data-cardbridge-auto-arm=\"off\"]")?
            .is_none())
    }

    /// S400: put the number into the marked input and click the marked submit button, as a person
    /// would — but marked, so that tests can tell the module did it.
    pub fn fill_and_submit(
        &self,
        read_id: &str,
        card_number: &str,
        kind: CardKind,
    ) -> Result<(), JsValue> {
        let input: HtmlInputElement = self
            .document
            .query_selector(CARD_NUMBER)?
            .ok_or("cardbridge: no [data-cardbridge=card-number] input on this page")?
            .dyn_into()?;
        // Prefer the controls of the input's own form when a page holds several forms.
        let form = input.closest("form")?;
        let scoped = |selector: &str| -> Result<Option<Element>, JsValue> {
            if let Some(form) = &form {
                if let Some(found) = form.query_selector(selector)? {
                    return Ok(Some(found));
                }
            }
            self.document.query_selector(selector)
        };
        let button: HtmlElement = scoped(SUBMIT)?
            .ok_or("cardbridge: no [data-cardbridge=submit] button on this page")?
            .dyn_into()?;

        input.set_value(card_number);
        if let Some(read_id_input) = scoped(READ_ID)? {
            read_id_input
                .dyn_into::<HtmlInputElement>()?
                .set_value(read_id);
        }
        input.dispatch_event(&bubbling_event("input")?)?;
        input.dispatch_event(&bubbling_event("change")?)?;
        input.set_attribute("data-cardbridge-filled", read_id)?;
        input.set_attribute("data-cardbridge-kind", kind.wire_name())?;
        button.set_attribute("data-cardbridge-clicked", read_id)?;
        button.click();
        Ok(())
    }

    /// Show a snapshot: `<html>` attributes, status text, consent question, demo tray; when the
    /// snapshot changed, also tell page scripts with a `cardbridge:state` event.
    pub fn render(&self, snapshot: &Snapshot, changed: bool) -> Result<(), JsValue> {
        let lang = self.lang();
        let root = self.root()?;
        root.set_attribute("data-cardbridge-state", snapshot.phase.as_str())?;
        match snapshot.reason {
            Some(reason) => root.set_attribute("data-cardbridge-reason", reason.as_str())?,
            None => root.remove_attribute("data-cardbridge-reason")?,
        }

        let status_text = text::status(lang, snapshot);
        for status in self.all(STATUS)? {
            if !status.has_attribute("role") {
                status.set_attribute("role", "status")?;
            }
            status.set_attribute("data-cardbridge-state", snapshot.phase.as_str())?;
            if status.text_content().as_deref() != Some(status_text.as_str()) {
                status.set_text_content(Some(&status_text));
            }
        }
        for container in self.all(CONSENT)? {
            self.render_consent(&container, lang, snapshot.consent_question.as_deref())?;
        }
        for tray in self.all(DEMO_TRAY)? {
            self.render_demo_tray(&tray, lang, snapshot.demo_cards.as_deref())?;
        }

        if changed {
            let init = CustomEventInit::new();
            init.set_detail(&detail(snapshot)?);
            let event = CustomEvent::new_with_event_init_dict("cardbridge:state", &init)?;
            self.document.dispatch_event(&event)?;
        }
        Ok(())
    }

    fn render_consent(
        &self,
        container: &Element,
        lang: Lang,
        question: Option<&str>,
    ) -> Result<(), JsValue> {
        let key = question.map(|name| [lang.as_str(), "|", name].concat());
        if !needs_render(container, key.as_deref())? {
            return if key.is_none() {
                hide(container)
            } else {
                Ok(())
            };
        }
        let Some(name) = question else {
            return clear(container);
        };
        container.set_attribute("role", "group")?;
        container.set_attribute("aria-label", text::consent_label(lang))?;
        let prompt = self.element(
            "p",
            "cb-consent-question",
            &text::consent_question(lang, name),
        )?;
        let actions = self.element("div", "cb-consent-actions", "")?;
        for (decision, class, label) in [
            (
                "allow_once",
                "cb-button cb-button-primary",
                text::allow_once(lang),
            ),
            ("allow_always", "cb-button", text::allow_always(lang)),
            ("deny", "cb-button cb-button-danger", text::deny(lang)),
        ] {
            let button = self.button(class, label)?;
            button.set_attribute("data-cardbridge-action", "consent")?;
            button.set_attribute("data-decision", decision)?;
            actions.append_child(&button)?;
        }
        container.replace_children_with_node_2(&prompt, &actions);
        container.remove_attribute("hidden")?;
        Ok(())
    }

    fn render_demo_tray(
        &self,
        tray: &Element,
        lang: Lang,
        cards: Option<&[String]>,
    ) -> Result<(), JsValue> {
        let key = cards.map(|cards| [lang.as_str(), "|", &cards.join("|")].concat());
        if !needs_render(tray, key.as_deref())? {
            return if key.is_none() { hide(tray) } else { Ok(()) };
        }
        let Some(cards) = cards else {
            return clear(tray);
        };
        let title = self.element("p", "cb-demo-title", text::demo_title(lang))?;
        let buttons = self.element("div", "cb-demo-cards", "")?;
        for card in cards {
            let button = self.button("cb-button cb-demo-card", &text::demo_card(lang, card))?;
            button.set_attribute("data-cardbridge-action", "demo-tap")?;
            button.set_attribute("data-card", card)?;
            buttons.append_child(&button)?;
        }
        let remove = self.button("cb-button cb-demo-remove", text::demo_remove(lang))?;
        remove.set_attribute("data-cardbridge-action", "demo-remove")?;
        buttons.append_child(&remove)?;
        tray.replace_children_with_node_2(&title, &buttons);
        tray.remove_attribute("hidden")?;
        Ok(())
    }

    fn all(&self, selector: &str) -> Result<Vec<Element>, JsValue> {
        let list = self.document.query_selector_all(selector)?;
        Ok((0..list.length())
            .filter_map(|i| list.item(i))
            .filter_map(|node| node.dyn_into::<Element>().ok())
            .collect())
    }

    fn element(&self, tag: &str, class: &str, content: &str) -> Result<Element, JsValue> {
        let element = self.document.create_element(tag)?;
        element.set_class_name(class);
        if !content.is_empty() {
            element.set_text_content(Some(content));
        }
        Ok(element)
    }

    fn button(&self, class: &str, label: &str) -> Result<Element, JsValue> {
        let button = self.element("button", class, label)?;
        button.set_attribute("type", "button")?;
        Ok(button)
    }
}

/// The action a click on `event.target` asks for, if it hit one of the module's controls.
pub fn action_for_click(event: &Event) -> Result<Option<Action>, JsValue> {
    let Some(target) = event
        .target()
        .and_then(|target| target.dyn_into::<Element>().ok())
    else {
        return Ok(None);
    };
    let Some(control) = target.closest(ACTION_TARGETS)? else {
        return Ok(None);
    };
    if control.has_attribute("disabled") {
        return Ok(None);
    }
    let action = match control.get_attribute("data-cardbridge-action").as_deref() {
        Some("consent") => match control.get_attribute("data-decision").as_deref() {
            Some("allow_once") => Some(Action::Consent(ConsentDecision::AllowOnce)),
            Some("allow_always") => Some(Action::Consent(ConsentDecision::AllowAlways)),
            Some("deny") => Some(Action::Consent(ConsentDecision::Deny)),
            _ => None,
        },
        Some("demo-tap") => control.get_attribute("data-card").map(Action::DemoTap),
        Some("demo-remove") => Some(Action::DemoRemove),
        Some(_) => None,
        None => Some(Action::Arm),
    };
    if action.is_some() {
        // An arm button inside a form must not submit it.
        event.prevent_default();
    }
    Ok(action)
}

/// Whether `container` shows something other than `key` (`None` = empty); records `key` if so.
fn needs_render(container: &Element, key: Option<&str>) -> Result<bool, JsValue> {
    let shown = container.get_attribute("data-cardbridge-rendered");
    if shown.as_deref() == key {
        return Ok(false);
    }
    match key {
        Some(key) => container.set_attribute("data-cardbridge-rendered", key)?,
        None => container.remove_attribute("data-cardbridge-rendered")?,
    }
    Ok(true)
}

fn clear(container: &Element) -> Result<(), JsValue> {
    container.replace_children_with_node_0();
    hide(container)
}

fn hide(container: &Element) -> Result<(), JsValue> {
    if !container.has_attribute("hidden") {
        container.set_attribute("hidden", "")?;
    }
    Ok(())
}

fn bubbling_event(kind: &str) -> Result<Event, JsValue> {
    let init = EventInit::new();
    init.set_bubbles(true);
    Event::new_with_event_init_dict(kind, &init)
}

/// `detail` of the `cardbridge:state` event: state, reason, the terminal and the last read id.
/// The card number itself is not repeated here; it is in the input.
fn detail(snapshot: &Snapshot) -> Result<JsValue, JsValue> {
    let detail = Object::new();
    set(&detail, "state", &snapshot.phase.as_str().into())?;
    set(
        &detail,
        "reason",
        &nullable(snapshot.reason.map(|reason| reason.as_str())),
    )?;
    set(&detail, "reconnecting", &snapshot.reconnecting.into())?;
    set(&detail, "read_id", &nullable(snapshot.read_id.as_deref()))?;
    let terminal = match &snapshot.view {
        Some(view) => {
            let terminal = Object::new();
            set(&terminal, "terminal_id", &view.terminal_id.as_str().into())?;
            set(
                &terminal,
                "terminal_name",
                &view.terminal_name.as_str().into(),
            )?;
            set(&terminal, "agent_online", &view.agent_online.into())?;
            set(&terminal, "permitted", &view.permitted.into())?;
            set(&terminal, "consent", &view.consent.wire_name().into())?;
            set(&terminal, "card_present", &view.card_present.into())?;
            set(&terminal, "armed", &view.armed.into())?;
            set(&terminal, "demo_reader", &view.demo_reader.into())?;
            let cards: Array = view
                .demo_cards
                .iter()
                .map(|card| JsValue::from_str(card))
                .collect();
            set(&terminal, "demo_cards", &cards)?;
            terminal.into()
        }
        None => JsValue::NULL,
    };
    set(&detail, "terminal", &terminal)?;
    Ok(detail.into())
}

/// `null` rather than `undefined`, so the key survives `JSON.stringify`.
fn nullable(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, JsValue::from_str)
}

fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(target, &key.into(), value).map(drop)
}
