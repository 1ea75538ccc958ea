//! The watch thread of the PC/SC backend: reader and card changes, as [`BackendEvent`]s.
//!
//! It owns its own context (never the reader thread's) and waits on `SCardGetStatusChange` for
//! the readers and the `\\?PnP?\Notification` pseudo-reader, [`POLL`] at a time: a change wakes it
//! at once, the timeout only bounds how long a stop or a reader list change can go unseen. Each
//! view of the readers is compared with the last one sent ([`changes`]); only differences become
//! events. When pcscd goes away every reader is reported unavailable and the context is
//! re-established with backoff until pcscd is back.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pcsc::{Context, Scope, State, PNP_NOTIFICATION};

use super::{pcsc_call, reader_names, reader_state};
use crate::backend::{BackendEvent, EventSink, ReaderState, ReaderStatus};
use crate::backoff::Backoff;

/// Longest single wait on status changes.
const POLL: Duration = Duration::from_millis(300);
/// Re-establishing the context after pcscd went away: first delay, then doubling up to the cap.
const RETRY_INITIAL: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(3);

/// A reader as last seen: its state and card event count (the count tells a quick re-tap, where
/// the state is "present" both times, from the same card staying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub state: ReaderState,
    pub event_count: u32,
}

/// Every reader by name.
pub(super) type Snapshot = BTreeMap<String, Seen>;

/// The running watch thread; dropping this stops it (within one [`POLL`] at most, at once when
/// the wait can be cancelled).
pub(super) struct Watcher {
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    /// The context the thread waits on, to cancel the wait.
    waiting_on: Arc<Mutex<Option<Context>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(super) fn start(only: Option<String>, events: EventSink) -> std::io::Result<Watcher> {
        let (stop, stopped) = mpsc::channel();
        let waiting_on = Arc::new(Mutex::new(None));
        let mut watch =
            Watch { only, events, stopped, waiting_on: Arc::clone(&waiting_on), seen: Snapshot::new(), down: false };
        let thread = std::thread::Builder::new().name("reader-pcsc-watch".into()).spawn(move || {
            watch.run();
            tracing::debug!("PC/SC watch thread stopped");
        })?;
        Ok(Watcher { stop: Some(stop), waiting_on, thread: Some(thread) })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(context) = lock(&self.waiting_on).as_ref() {
            // Fails harmlessly when the thread is between waits: it sees the stop on its next turn.
            let _ = pcsc_call(|| context.cancel());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A std mutex, never held across a blocking call; a panic while holding it leaves a usable value.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread's state.
struct Watch {
    only: Option<String>,
    events: EventSink,
    stopped: mpsc::Receiver<()>,
    waiting_on: Arc<Mutex<Option<Context>>>,
    /// What the agent has been told.
    seen: Snapshot,
    /// Whether pcscd is known to be away (to log the change once, not every retry).
    down: bool,
}

impl Watch {
    fn run(&mut self) {
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        while !self.stopping() {
            let outcome = pcsc_call(|| {
                let context = Context::establish(Scope::User)?;
                *lock(&self.waiting_on) = Some(context.clone());
                let outcome = self.watch(&context, &mut backoff);
                *lock(&self.waiting_on) = None;
                outcome
            });
            *lock(&self.waiting_on) = None;
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    if !self.down {
                        tracing::warn!(%error, "PC/SC is not available; readers reported unavailable until it is back");
                        self.down = true;
                    }
                    let unavailable = unavailable(&self.seen, self.only.as_deref());
                    self.publish(unavailable);
                    if self.sleep(backoff.next_delay()) {
                        return;
                    }
                }
            }
        }
    }

    /// Follow the readers on `context` until stopped (`Ok`) or PC/SC fails (`Err`).
    fn watch(&mut self, context: &Context, backoff: &mut Backoff) -> Result<(), pcsc::Error> {
        let mut states = vec![pcsc::ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE)];
        let mut observed = Snapshot::new();
        // Until the first status arrives, this context has seen nothing worth telling.
        let mut first_status = true;
        loop {
            if self.stopping() {
                return Ok(());
            }
            // Readers come and go: PnP wakes the wait when the list changes, and the list is read
            // again on every turn anyway (pcscd without hot-plug support, a missed notification).
            let names = reader_names(context, self.only.as_deref())?;
            states.retain(|state| is_pnp(state) || names.iter().any(|name| name.as_c_str() == state.name()));
            for name in &names {
                if !states.iter().any(|state| state.name() == name.as_c_str()) {
                    states.push(pcsc::ReaderState::new(name.clone(), State::UNAWARE));
                }
            }
            observed.retain(|seen_name, _| names.iter().any(|name| name.to_bytes() == seen_name.as_bytes()));
            if !first_status {
                self.publish(with_only(&observed, self.only.as_deref()));
            }

            match context.get_status_change(POLL, &mut states) {
                Ok(()) => {
                    first_status = false;
                    if self.down {
                        tracing::info!("PC/SC is available again");
                        self.down = false;
                    }
                    backoff.reset();
                    for state in &mut states {
                        if !is_pnp(state) {
                            let name = state.name().to_string_lossy().into_owned();
                            let event_state = state.event_state();
                            if event_state.intersects(State::UNKNOWN | State::IGNORE) {
                                // The reader is gone; the next listing drops it.
                                observed.remove(&name);
                            } else {
                                let seen = Seen {
                                    state: reader_state(event_state, state.atr()),
                                    event_count: state.event_count(),
                                };
                                observed.insert(name, seen);
                            }
                        }
                        state.sync_current_state();
                    }
                    self.publish(with_only(&observed, self.only.as_deref()));
                }
                // A reader vanished between listing and waiting: the next turn lists again.
                Err(pcsc::Error::Timeout | pcsc::Error::Cancelled | pcsc::Error::UnknownReader) => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Tell the agent what changed since the last snapshot it was told about.
    fn publish(&mut self, now: Snapshot) {
        for event in changes(&self.seen, &now) {
            match &event {
                BackendEvent::CardPresent { reader, .. } => tracing::debug!(%reader, "PC/SC: card present"),
                BackendEvent::CardRemoved { reader } => tracing::debug!(%reader, "PC/SC: card removed"),
                BackendEvent::ReadersChanged(readers) => tracing::debug!(n_readers = readers.len(), "PC/SC: readers"),
            }
            self.events.send(event);
        }
        self.seen = now;
    }

    fn stopping(&self) -> bool {
        !matches!(self.stopped.try_recv(), Err(TryRecvError::Empty))
    }

    /// Wait `delay` unless stopped first; returns whether the thread must stop.
    fn sleep(&self, delay: Duration) -> bool {
        !matches!(self.stopped.recv_timeout(delay), Err(RecvTimeoutError::Timeout))
    }
}

fn is_pnp(state: &pcsc::ReaderState) -> bool {
    state.name() == PNP_NOTIFICATION()
}

/// The readers seen, plus the one reader of `pcsc:NAME` as unavailable when it is not there.
fn with_only(observed: &Snapshot, only: Option<&str>) -> Snapshot {
    let mut snapshot = observed.clone();
    if let Some(only) = only {
        snapshot.entry(only.to_string()).or_insert(Seen { state: ReaderState::Unavailable, event_count: 0 });
    }
    snapshot
}

/// Every reader last seen (and the one of `pcsc:NAME`), unavailable: PC/SC itself is away.
fn unavailable(seen: &Snapshot, only: Option<&str>) -> Snapshot {
    let snapshot =
        seen.keys().map(|name| (name.clone(), Seen { state: ReaderState::Unavailable, event_count: 0 })).collect();
    with_only(&snapshot, only)
}

/// The events that take the agent from `before` to `now`: removals first, then the reader list
/// if readers came, went or changed availability, then arrivals (so a new reader is announced
/// before the card in it, and a card leaves before its reader does).
pub(super) fn changes(before: &Snapshot, now: &Snapshot) -> Vec<BackendEvent> {
    fn card(seen: Option<&Seen>) -> Option<(&[u8], u32)> {
        match seen {
            Some(Seen { state: ReaderState::CardPresent { atr }, event_count }) => Some((atr, *event_count)),
            _ => None,
        }
    }
    let same_tap = |a: Option<(&[u8], u32)>, b: Option<(&[u8], u32)>| match (a, b) {
        (Some((atr_a, count_a)), Some((atr_b, count_b))) => atr_a == atr_b && count_a == count_b,
        _ => false,
    };
    let mut events = Vec::new();
    for (name, seen) in before {
        let was = card(Some(seen));
        if was.is_some() && !same_tap(was, card(now.get(name))) {
            events.push(BackendEvent::CardRemoved { reader: name.clone() });
        }
    }
    let shape = |snapshot: &Snapshot| -> Vec<(String, bool)> {
        snapshot.iter().map(|(name, seen)| (name.clone(), seen.state == ReaderState::Unavailable)).collect()
    };
    if shape(before) != shape(now) {
        events.push(BackendEvent::ReadersChanged(
            now.iter().map(|(name, seen)| ReaderStatus { name: name.clone(), state: seen.state.clone() }).collect(),
        ));
    }
    for (name, seen) in now {
        if let Some((atr, _)) = card(Some(seen)) {
            if !same_tap(card(before.get(name)), card(Some(seen))) {
                events.push(BackendEvent::CardPresent { reader: name.clone(), atr: atr.to_vec() });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATR: [u8; 3] = [0x3B, 0x80, 0x01];

    fn snapshot(readers: &[(&str, ReaderState, u32)]) -> Snapshot {
        readers
            .iter()
            .map(|(name, state, count)| (name.to_string(), Seen { state: state.clone(), event_count: *count }))
            .collect()
    }

    fn present() -> ReaderState {
        ReaderState::CardPresent { atr: ATR.to_vec() }
    }

    fn present_event(reader: &str) -> BackendEvent {
        BackendEvent::CardPresent { reader: reader.into(), atr: ATR.to_vec() }
    }

    fn removed_event(reader: &str) -> BackendEvent {
        BackendEvent::CardRemoved { reader: reader.into() }
    }

    fn readers_event(readers: &[(&str, ReaderState)]) -> BackendEvent {
        BackendEvent::ReadersChanged(
            readers.iter().map(|(name, state)| ReaderStatus { name: name.to_string(), state: state.clone() }).collect(),
        )
    }

    #[test]
    fn the_first_view_announces_the_readers_then_the_cards() {
        let now = snapshot(&[("A", ReaderState::Empty, 0), ("B", present(), 1)]);

        let events = changes(&Snapshot::new(), &now);

        assert_eq!(events, vec![readers_event(&[("A", ReaderState::Empty), ("B", present())]), present_event("B")]);
    }

    #[test]
    fn a_tap_and_a_removal_are_card_events_only() {
        let empty = snapshot(&[("A", ReaderState::Empty, 0)]);
        let tapped = snapshot(&[("A", present(), 1)]);
        let gone = snapshot(&[("A", ReaderState::Empty, 2)]);

        assert_eq!(changes(&empty, &tapped), vec![present_event("A")]);
        assert_eq!(changes(&tapped, &tapped), vec![]);
        assert_eq!(changes(&tapped, &gone), vec![removed_event("A")]);
    }

    #[test]
    fn a_quick_re_tap_is_a_removal_and_a_new_card() {
        let before = snapshot(&[("A", present(), 1)]);
        let after = snapshot(&[("A", present(), 3)]);

        assert_eq!(changes(&before, &after), vec![removed_event("A"), present_event("A")]);
    }

    #[test]
    fn a_reader_unplugged_with_its_card_loses_the_card_first() {
        let before = snapshot(&[("A", ReaderState::Empty, 0), ("B", present(), 1)]);
        let after = snapshot(&[("A", ReaderState::Empty, 0)]);

        assert_eq!(changes(&before, &after), vec![removed_event("B"), readers_event(&[("A", ReaderState::Empty)])]);
    }

    #[test]
    fn pcscd_going_away_makes_every_reader_unavailable_and_its_return_brings_the_card_back() {
        let before = snapshot(&[("A", present(), 1), ("B", ReaderState::Empty, 0)]);
        let away = unavailable(&before, None);
        let back = snapshot(&[("A", present(), 1), ("B", ReaderState::Empty, 0)]);

        assert_eq!(
            changes(&before, &away),
            vec![
                removed_event("A"),
                readers_event(&[("A", ReaderState::Unavailable), ("B", ReaderState::Unavailable)])
            ]
        );
        assert_eq!(changes(&away, &away), vec![]);
        assert_eq!(
            changes(&away, &back),
            vec![readers_event(&[("A", present()), ("B", ReaderState::Empty)]), present_event("A")]
        );
    }

    #[test]
    fn the_named_reader_is_unavailable_until_it_appears() {
        let absent = with_only(&Snapshot::new(), Some("A"));
        let plugged = with_only(&snapshot(&[("A", ReaderState::Empty, 0)]), Some("A"));

        assert_eq!(changes(&Snapshot::new(), &absent), vec![readers_event(&[("A", ReaderState::Unavailable)])]);
        assert_eq!(changes(&absent, &plugged), vec![readers_event(&[("A", ReaderState::Empty)])]);
        assert_eq!(unavailable(&Snapshot::new(), Some("A")), absent);
    }
}
