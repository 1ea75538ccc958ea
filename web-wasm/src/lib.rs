//! The cardbridge page module (patent Q-S2/Q-S3): receives the card number from the server over
//! `/ws/page`, puts it into the page's marked card-number input and clicks the marked submit button.
//!
//! # Layout
//!
//! - [`state`]: the pure state machine — which state the page shows, when to arm the terminal.
//! - [`socket`]: the WebSocket to `/ws/page` and the reconnect backoff.
//! - [`dom`]: the page — marked elements, filling and clicking, rendering, `<html>` attributes.
//! - [`text`]: status texts in Simplified Chinese and English.
//!
//! This file only wires them: browser events go into the [`state::Machine`], its effects come out to
//! the socket and the page.
//!
//! # Page contract
//!
//! Marks (`data-cardbridge="…"`): `card-number` (input, required), `submit` (button, required),
//! `read-id` (hidden input), `status`, `consent`, `demo-tray` (containers), `arm` (buttons). The module
//! reports `data-cardbridge-state` / `data-cardbridge-reason` on `<html>`, dispatches
//! `cardbridge:state` on `document`, and marks what it did with `data-cardbridge-filled` and
//! `data-cardbridge-clicked` (the read id). It re-renders its texts on `cardbridge:lang`.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use wasm_bindgen::prelude::*;

mod dom;
mod socket;
mod state;
mod text;

use dom::Dom;
use protocol::page::{json, ServerToPage};
use socket::{Backoff, Handlers, Socket};
use state::{Effect, Machine, Snapshot};

struct App {
    dom: Dom,
    machine: Machine,
    socket: Option<Socket>,
    backoff: Backoff,
    shown: Option<Snapshot>,
}

type Shared = Rc<RefCell<App>>;

thread_local! {
    /// The running module; held here so that it lives as long as the page.
    static APP: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Start the module: connect to `/ws/page`, and keep the page's marked elements in step with the
/// terminal until the page goes away. Calling it again does nothing.
#[wasm_bindgen]
pub fn start() -> Result<(), JsValue> {
    if APP.with(|running| running.borrow().is_some()) {
        return Ok(());
    }
    let dom = Dom::new()?;
    let machine = Machine::new(dom.auto_arm()?);
    let app: Shared = Rc::new(RefCell::new(App {
        dom: dom.clone(),
        machine,
        socket: None,
        backoff: Backoff::default(),
        shown: None,
    }));
    APP.with(|running| *running.borrow_mut() = Some(app.clone()));

    // One delegated listener serves the consent and demo buttons the module renders and the page's
    // arm buttons, whenever they appear. Like the app, it lives as long as the page.
    let weak = Rc::downgrade(&app);
    let on_click = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
        report(on_click(&weak, &event));
    });
    dom.document()
        .add_event_listener_with_callback("click", on_click.as_ref().unchecked_ref())?;
    on_click.forget();

    let weak = Rc::downgrade(&app);
    let on_lang = Closure::<dyn FnMut()>::new(move || {
        if let Some(app) = weak.upgrade() {
            report(render(&app, true));
        }
    });
    dom.document()
        .add_event_listener_with_callback("cardbridge:lang", on_lang.as_ref().unchecked_ref())?;
    on_lang.forget();

    render(&app, false)?;
    connect(&app);
    Ok(())
}

fn on_click(weak: &Weak<RefCell<App>>, event: &web_sys::Event) -> Result<(), JsValue> {
    // Decide before borrowing: the module's own `.click()` on submit bubbles here too.
    let Some(action) = dom::action_for_click(event)? else {
        return Ok(());
    };
    match weak.upgrade() {
        Some(app) => step(&app, |machine| machine.on_action(action)),
        None => Ok(()),
    }
}

fn connect(app: &Shared) {
    let result = {
        let window = app.borrow().dom.window().clone();
        socket::page_url(&window.location()).and_then(|url| socket::connect(&url, handlers(app)))
    };
    match result {
        Ok(socket) => app.borrow_mut().socket = Some(socket),
        Err(error) => {
            report(Err(error));
            schedule_reconnect(app);
        }
    }
}

fn handlers(app: &Shared) -> Handlers {
    let (open, text, close) = (Rc::downgrade(app), Rc::downgrade(app), Rc::downgrade(app));
    Handlers {
        on_open: Box::new(move || {
            if let Some(app) = open.upgrade() {
                report(step(&app, Machine::on_open));
            }
        }),
        on_text: Box::new(move |frame| {
            if let Some(app) = text.upgrade() {
                report(on_frame(&app, &frame));
            }
        }),
        on_close: Box::new(move || {
            if let Some(app) = close.upgrade() {
                report(step(&app, Machine::on_close));
                schedule_reconnect(&app);
            }
        }),
    }
}

fn on_frame(app: &Shared, frame: &str) -> Result<(), JsValue> {
    let frame: ServerToPage = match json::decode_server_to_page(frame) {
        Ok(frame) => frame,
        Err(error) => {
            web_sys::console::warn_2(&"cardbridge: ignored frame:".into(), &error.0.into());
            return Ok(());
        }
    };
    if matches!(frame, ServerToPage::State(_)) {
        app.borrow_mut().backoff.reset();
    }
    step(app, |machine| machine.on_frame(frame))
}

fn schedule_reconnect(app: &Shared) {
    let delay = app
        .borrow_mut()
        .backoff
        .next_delay_ms(js_sys::Math::random());
    let weak = Rc::downgrade(app);
    let retry = Closure::once_into_js(move || {
        if let Some(app) = weak.upgrade() {
            connect(&app);
        }
    });
    let window = app.borrow().dom.window().clone();
    report(
        window
            .set_timeout_with_callback_and_timeout_and_arguments_0(retry.unchecked_ref(), delay)
            .map(drop),
    );
}

/// Feed one event to the machine, carry out its effects, then show the result: a card number is
/// filled in and submitted before the page's status is redrawn, so the submit waits for nothing.
/// No borrow is held while the page runs its own code (event listeners, the submit handler).
fn step(app: &Shared, event: impl FnOnce(&mut Machine) -> Vec<Effect>) -> Result<(), JsValue> {
    let effects = event(&mut app.borrow_mut().machine);
    let done = carry_out(app, effects);
    render(app, false)?;
    done
}

fn carry_out(app: &Shared, effects: Vec<Effect>) -> Result<(), JsValue> {
    for effect in effects {
        match effect {
            Effect::Send(message) => {
                let sent = match &app.borrow().socket {
                    Some(socket) => socket.send(&json::encode_page_to_server(&message))?,
                    None => false,
                };
                if !sent {
                    web_sys::console::warn_1(&"cardbridge: not connected; request dropped".into());
                }
            }
            Effect::Fill {
                read_id,
                card_number,
                kind,
            } => {
                let dom = app.borrow().dom.clone();
                dom.fill_and_submit(&read_id, &card_number, kind)?;
            }
        }
    }
    Ok(())
}

/// Show the machine's current snapshot; `cardbridge:state` fires only when it changed.
fn render(app: &Shared, language_changed: bool) -> Result<(), JsValue> {
    let (dom, snapshot, changed) = {
        let mut app = app.borrow_mut();
        let snapshot = app.machine.snapshot();
        let changed = app.shown.as_ref() != Some(&snapshot);
        app.shown = Some(snapshot.clone());
        (app.dom.clone(), snapshot, changed)
    };
    dom.render(&snapshot, changed && !language_changed)
}

fn report(result: Result<(), JsValue>) {
    if let Err(error) = result {
        web_sys::console::error_2(&"cardbridge:".into(), &error);
    }
}
