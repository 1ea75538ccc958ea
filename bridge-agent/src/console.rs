//! The `--console` of the virtual reader: tap and remove simulated cards by typing.
//!
//! ```text
//! tap NAME   present the simulated card NAME (as if tapped)
//! remove     take the card away
//! list       the simulated cards there are
//! help       this text
//! ```

use anyhow::Context;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::ReaderHandle;

const HELP: &str = "\
commands:
  tap NAME   present the simulated card NAME (as if tapped)
  remove     take the card away
  list       the simulated cards there are
  help       this text
";

/// Standard input, line by line, read on its own thread: a blocking stdin read on the runtime's
/// blocking pool would hold up the runtime's shutdown until the next Enter.
pub fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (sender, lines) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new().name("console".into()).spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the console");
    }
    lines
}

/// Answer console commands from `lines` on `output` until the lines end.
pub async fn console<W>(
    reader: ReaderHandle,
    mut lines: mpsc::UnboundedReceiver<String>,
    mut output: W,
) -> anyhow::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some(line) = lines.recv().await {
        let answer = answer(&reader, line.trim()).await;
        if !answer.is_empty() {
            output.write_all(answer.as_bytes()).await.context("cannot write to the console")?;
            output.flush().await.context("cannot write to the console")?;
        }
    }
    Ok(())
}

async fn answer(reader: &ReaderHandle, line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => String::new(),
        (Some("tap"), Some(name), None) => match reader.simulate_tap(name).await {
            Ok(()) => format!("tapped {name}\n"),
            Err(error) => format!("error: {error}\n"),
        },
        (Some("remove"), None, _) => match reader.simulate_remove().await {
            Ok(()) => "removed\n".to_string(),
            Err(error) => format!("error: {error}\n"),
        },
        (Some("list"), None, _) => catalogue_text(),
        (Some("help"), None, _) => HELP.to_string(),
        _ => format!("unknown command \"{line}\"\n{HELP}"),
    }
}

/// The simulated cards, one a line; card numbers masked (first 6 and last 4 digits).
pub fn catalogue_text() -> String {
    let mut text = String::new();
    for entry in card::sim::catalogue() {
        let kind = if entry.bank { "bank card" } else { "non-bank card" };
        text.push_str(&format!(
            "  {:<26} {} [{kind}, {}]\n",
            entry.name,
            entry.label,
            card::pan::mask(entry.expected_number)
        ));
    }
    if text.is_empty() {
        text.push_str("  (no simulated cards)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendEvent, VirtualReader, VIRTUAL_READER_NAME};

    #[tokio::test]
    async fn the_console_taps_removes_lists_and_helps() {
        let (handle, mut events) = ReaderHandle::spawn(Box::new(VirtualReader::new())).unwrap();
        let card = card::sim::catalogue().into_iter().next().expect("a simulated card").name.to_string();
        let (typed, lines) = mpsc::unbounded_channel();
        for line in ["help", "list", &format!("tap {card}"), "remove", "tap no-such-card", "format c:", ""] {
            typed.send(line.to_string()).unwrap();
        }
        drop(typed);
        let mut output = Vec::new();

        console(handle, lines, &mut output).await.unwrap();

        let output = String::from_utf8(output).unwrap();
        assert!(output.contains("tap NAME"), "{output}");
        assert!(output.contains(&card), "{output}");
        assert!(output.contains(&format!("tapped {card}")), "{output}");
        assert!(output.contains("removed"), "{output}");
        assert!(output.contains("error: unknown simulated card \"no-such-card\""), "{output}");
        assert!(output.contains("unknown command \"format c:\""), "{output}");
        assert!(matches!(events.recv().await, Some(BackendEvent::CardPresent { .. })));
        assert_eq!(events.recv().await, Some(BackendEvent::CardRemoved { reader: VIRTUAL_READER_NAME.into() }));
    }

    #[test]
    fn the_catalogue_never_shows_a_full_card_number() {
        let text = catalogue_text();

        for entry in card::sim::catalogue() {
            if entry.bank {
                assert!(!text.contains(entry.expected_number), "{text}");
            }
        }
    }
}
