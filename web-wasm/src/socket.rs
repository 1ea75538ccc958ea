//! The WebSocket to `/ws/page`: connecting, sending text frames, and the reconnect backoff.
//!
//! The page never names its user or terminal: the browser sends the session and pairing cookies
//! with the upgrade request, so the URL is always the same.

use wasm_bindgen::prelude::*;
use web_sys::{Location, MessageEvent, WebSocket};

/// Callbacks for one connection. They run on the browser's event loop, never re-entrantly.
pub struct Handlers {
    pub on_open: Box<dyn FnMut()>,
    pub on_text: Box<dyn FnMut(String)>,
    pub on_close: Box<dyn FnMut()>,
}

/// One connection. Dropping it detaches the handlers and closes the socket.
pub struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut()>,
}

/// `ws://host/ws/page`, or `wss://` when the page came over https.
pub fn page_url(location: &Location) -> Result<String, JsValue> {
    let scheme = if location.protocol()? == "https:" {
        "wss:"
    } else {
        "ws:"
    };
    Ok([scheme, "//", &location.host()?, "/ws/page"].concat())
}

pub fn connect(url: &str, handlers: Handlers) -> Result<Socket, JsValue> {
    let Handlers {
        on_open,
        mut on_text,
        on_close,
    } = handlers;
    let ws = WebSocket::new(url)?;
    let on_open = Closure::<dyn FnMut()>::wrap(on_open);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        // The protocol is JSON text frames only; anything else is not ours.
        if let Some(text) = event.data().as_string() {
            on_text(text);
        }
    });
    let on_close = Closure::<dyn FnMut()>::wrap(on_close);
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // `error` is always followed by `close`; the browser already logs the failure.
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    Ok(Socket {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    })
}

impl Socket {
    /// Send one text frame if the socket is open; `Ok(false)` if it is not (yet).
    pub fn send(&self, text: &str) -> Result<bool, JsValue> {
        if self.ws.ready_state() != WebSocket::OPEN {
            return Ok(false);
        }
        self.ws.send_with_str(text)?;
        Ok(true)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Detach first: the closures are freed with this struct and must never be called after.
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        // Closing an already closed socket is a no-op; there is nothing useful to do on error.
        let _ = self.ws.close();
    }
}

/// Exponential backoff with jitter for reconnects: 0.5 s, 1 s, 2 s … up to 30 s.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    const BASE_MS: f64 = 500.0;
    const MAX_MS: f64 = 30_000.0;

    /// The next delay; `random` in `[0, 1)` spreads reconnects of many pages after a server restart.
    pub fn next_delay_ms(&mut self, random: f64) -> i32 {
        let ceiling = (Self::BASE_MS * 2f64.powi(self.attempt.min(16) as i32)).min(Self::MAX_MS);
        self.attempt = self.attempt.saturating_add(1);
        (ceiling * (0.5 + 0.5 * random.clamp(0.0, 1.0))) as i32
    }

    /// A healthy session: start again from the shortest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<i32> = (0..10).map(|_| backoff.next_delay_ms(1.0)).collect();
        assert_eq!(&delays[..4], &[500, 1000, 2000, 4000]);
        assert_eq!(delays[9], 30_000);

        backoff.reset();
        assert_eq!(backoff.next_delay_ms(0.0), 250);
    }
}
