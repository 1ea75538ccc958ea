//! The virtual reader: one reader with the card simulator of the `card` crate in its field.
//!
//! Cards are tapped and removed by name (`SimulateTap`, `--card`, the `--console`). A card keeps
//! its persistent state (a purse balance, its transaction counter) between taps, as a real card in
//! a cardholder's pocket does; each tap resets it, so session state (a purse load half done) dies.

use std::collections::HashMap;

use super::{
    exchange_error, BackendError, BackendEvent, EventSink, GroupResponses, ReaderBackend, ReaderState, ReaderStatus,
};

/// The one reader of the virtual backend.
pub const VIRTUAL_READER_NAME: &str = "Cardbridge Virtual Reader 0";

/// The in-process simulated reader.
pub struct VirtualReader {
    /// The card in the field, by catalogue name.
    present: Option<String>,
    /// Every card tapped so far, by catalogue name (present or not), with its state.
    cards: HashMap<String, Box<dyn card::sim::SimCard>>,
    events: Option<EventSink>,
}

impl std::fmt::Debug for VirtualReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualReader").field("present", &self.present).finish_non_exhaustive()
    }
}

impl Default for VirtualReader {
    fn default() -> Self {
        VirtualReader::new()
    }
}

impl VirtualReader {
    /// An empty reader.
    pub fn new() -> VirtualReader {
        VirtualReader { present: None, cards: HashMap::new(), events: None }
    }

    /// Put the named simulated card in the field (no event: used before the agent starts).
    pub fn insert(&mut self, name: &str) -> Result<(), BackendError> {
        self.load(name)?;
        if let Some(card) = self.cards.get_mut(name) {
            card.reset();
            self.present = Some(name.to_string());
        }
        Ok(())
    }

    /// Put a card made elsewhere in the field under its own name (e.g. a [`card::sim::Misbehave`]
    /// wrapper, for tests of torn writes); it replaces a stored card of the same name.
    pub fn insert_card(&mut self, mut card: Box<dyn card::sim::SimCard>) {
        let name = card.name().to_string();
        card.reset();
        self.cards.insert(name.clone(), card);
        self.present = Some(name);
    }

    /// Make sure the named card exists (first tap: a fresh card from the catalogue).
    fn load(&mut self, name: &str) -> Result<(), BackendError> {
        if !self.cards.contains_key(name) {
            let card = card::sim::load(name).ok_or_else(|| BackendError::UnknownCard(name.into()))?;
            self.cards.insert(name.to_string(), card);
        }
        Ok(())
    }

    fn emit(&self, event: BackendEvent) {
        if let Some(events) = &self.events {
            events.send(event);
        }
    }

    fn take_away(&mut self) -> bool {
        if self.present.take().is_some() {
            self.emit(BackendEvent::CardRemoved { reader: VIRTUAL_READER_NAME.into() });
            true
        } else {
            false
        }
    }

    fn present_card(&mut self) -> Option<&mut Box<dyn card::sim::SimCard>> {
        let name = self.present.as_ref()?;
        self.cards.get_mut(name)
    }
}

impl ReaderBackend for VirtualReader {
    fn name(&self) -> &'static str {
        "virtual"
    }

    fn attach(&mut self, events: EventSink) {
        self.events = Some(events);
    }

    fn readers(&mut self) -> Vec<ReaderStatus> {
        let state = match self.present_card() {
            Some(card) => ReaderState::CardPresent { atr: card.atr() },
            None => ReaderState::Empty,
        };
        vec![ReaderStatus { name: VIRTUAL_READER_NAME.into(), state }]
    }

    fn transmit(
        &mut self,
        reader: Option<&str>,
        batch: &card::batch::Batch,
    ) -> Result<(String, GroupResponses), BackendError> {
        if let Some(reader) = reader {
            if reader != VIRTUAL_READER_NAME {
                return Err(BackendError::NoReader(reader.into()));
            }
        }
        let card = self.present_card().ok_or(BackendError::NoCard)?;
        let mut transmit = |apdu: &[u8]| -> Result<Vec<u8>, BackendError> { Ok(card.transmit(apdu)) };
        match card::batch::execute(batch, &mut transmit).map_err(exchange_error) {
            Ok(groups) => Ok((VIRTUAL_READER_NAME.into(), groups)),
            Err(BackendError::CardRemoved) => {
                // A card that stopped answering has left the field, as a real reader would report.
                self.take_away();
                Err(BackendError::CardRemoved)
            }
            Err(error) => Err(error),
        }
    }

    fn simulate_tap(&mut self, name: &str) -> Result<(), BackendError> {
        // Load first, so that an unknown card leaves the field as it was.
        self.load(name)?;
        self.take_away();
        self.insert(name)?;
        let atr = self.present_card().map(|card| card.atr()).unwrap_or_default();
        self.emit(BackendEvent::CardPresent { reader: VIRTUAL_READER_NAME.into(), atr });
        Ok(())
    }

    fn simulate_remove(&mut self) -> Result<(), BackendError> {
        self.take_away();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use card::batch::{Batch, Group};

    fn a_card() -> String {
        card::sim::catalogue().into_iter().next().expect("a simulated card").name.to_string()
    }

    fn select_ppse() -> Batch {
        Batch { groups: vec![Group::sequence(vec![hex::decode("00A404000E325041592E5359532E444446303100").unwrap()])] }
    }

    #[test]
    fn an_empty_reader_has_no_card() {
        let mut reader = VirtualReader::new();

        assert_eq!(
            reader.readers(),
            vec![ReaderStatus { name: VIRTUAL_READER_NAME.into(), state: ReaderState::Empty }]
        );
        assert_eq!(reader.transmit(None, &select_ppse()), Err(BackendError::NoCard));
    }

    #[test]
    fn a_tap_presents_the_card_and_says_so() {
        let (sink, mut events) = EventSink::channel();
        let mut reader = VirtualReader::new();
        reader.attach(sink);

        reader.simulate_tap(&a_card()).unwrap();

        let Ok(BackendEvent::CardPresent { reader: name, atr }) = events.try_recv() else { panic!("no event") };
        assert_eq!(name, VIRTUAL_READER_NAME);
        assert_eq!(reader.readers()[0].state, ReaderState::CardPresent { atr });
        let (used, groups) = reader.transmit(Some(VIRTUAL_READER_NAME), &select_ppse()).unwrap();
        assert_eq!(used, VIRTUAL_READER_NAME);
        assert!(groups[0][0].len() >= 2);
    }

    #[test]
    fn another_reader_name_is_no_reader() {
        let mut reader = VirtualReader::new();
        reader.insert(&a_card()).unwrap();

        assert_eq!(
            reader.transmit(Some("Other Reader"), &select_ppse()),
            Err(BackendError::NoReader("Other Reader".into()))
        );
    }

    #[test]
    fn removing_the_card_says_so_once() {
        let (sink, mut events) = EventSink::channel();
        let mut reader = VirtualReader::new();
        reader.attach(sink);
        reader.insert(&a_card()).unwrap();

        reader.simulate_remove().unwrap();
        reader.simulate_remove().unwrap();

        assert_eq!(events.try_recv(), Ok(BackendEvent::CardRemoved { reader: VIRTUAL_READER_NAME.into() }));
        assert!(events.try_recv().is_err());
        assert_eq!(reader.readers()[0].state, ReaderState::Empty);
    }

    #[test]
    fn a_card_that_vanishes_mid_batch_is_removed_with_the_outcome_unknown() {
        let (sink, mut events) = EventSink::channel();
        let mut reader = VirtualReader::new();
        reader.attach(sink);
        let card = card::sim::load(&a_card()).unwrap();
        reader.insert_card(Box::new(card::sim::Misbehave::new(card).vanish(card::sim::Vanish::AfterCommands(0))));

        let result = reader.transmit(None, &select_ppse());

        assert_eq!(result, Err(BackendError::CardRemoved));
        assert_eq!(events.try_recv(), Ok(BackendEvent::CardRemoved { reader: VIRTUAL_READER_NAME.into() }));
        assert_eq!(reader.readers()[0].state, ReaderState::Empty);
    }

    #[test]
    fn an_unknown_card_leaves_the_field_as_it_was() {
        let (sink, mut events) = EventSink::channel();
        let mut reader = VirtualReader::new();
        reader.attach(sink);
        reader.insert(&a_card()).unwrap();

        let error = reader.simulate_tap("no-such-card").unwrap_err();

        assert_eq!(error, BackendError::UnknownCard("no-such-card".into()));
        assert!(events.try_recv().is_err());
        assert!(matches!(reader.readers()[0].state, ReaderState::CardPresent { .. }));
    }
}
