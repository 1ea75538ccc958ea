//! Timings of recent card reads, for monitoring and the tap-to-submit benchmark: when the card
//! was reported, when the server held its number, when the page's submit arrived.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// How many recent reads are kept.
const KEEP: usize = 1024;

#[derive(Debug, Clone)]
pub struct ReadTiming {
    pub read_id: String,
    /// The agent reported the card (the read started right after).
    pub card_present: Instant,
    /// The server held the card number.
    pub number_obtained: Instant,
    /// The page's submit carrying this read id arrived (first time).
    pub submitted: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ReadTimings {
    entries: Mutex<VecDeque<ReadTiming>>,
}

impl ReadTimings {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ReadTiming>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_done(&self, read_id: &str, card_present: Instant) {
        let mut entries = self.lock();
        if entries.len() == KEEP {
            entries.pop_front();
        }
        entries.push_back(ReadTiming { read_id: read_id.to_string(), card_present, number_obtained: Instant::now(), submitted: None });
    }

    pub fn submitted(&self, read_id: &str) {
        let now = Instant::now();
        if let Some(entry) = self.lock().iter_mut().rev().find(|e| e.read_id == read_id) {
            entry.submitted.get_or_insert(now);
        }
    }

    pub fn snapshot(&self) -> Vec<ReadTiming> {
        self.lock().iter().cloned().collect()
    }
}
