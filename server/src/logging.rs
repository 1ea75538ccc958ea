//! Log output: `text` for people, `json` (one object a line) for log collectors.
//!
//! Neither lets a user-controlled string forge a log line: JSON escapes every string, and the text
//! writer ([`OneLine`]) escapes line breaks and control characters inside an event and cuts
//! events longer than [`MAX_LINE_BYTES`]. User-controlled strings are logged through [`Escaped`]
//! all the same, so that they read the same in both formats.

use std::io;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::util::TRUNCATED;

/// The default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=warn";

/// A text log line is cut at this many bytes.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Install the global subscriber writing to standard error.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing::subscriber::set_global_default(subscriber(format, filter, ansi, std::io::stderr))
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

/// The subscriber of `format` writing to `writer` (tests pass a buffer).
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, ansi: bool, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).with_writer(OneLine(writer)).finish()),
        LogFormat::Json => {
            Box::new(builder.json().with_current_span(true).with_span_list(false).with_writer(writer).finish())
        }
    }
}

/// A user-controlled string for a log field: control characters and line separators escaped
/// (`\n`, `\u{1b}`), everything else as is. Log with `user = %Escaped(&name)`.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A writer that keeps each event on one line: inside an event, line breaks and control
/// characters (but the terminal's colour escapes and tabs) are written escaped, and an event is cut
/// at [`MAX_LINE_BYTES`]. The formatter writes each event in one call.
#[derive(Debug)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

#[derive(Debug)]
pub struct OneLineWriter<W>(W);

/// `event` with line breaks and control characters escaped, cut at [`MAX_LINE_BYTES`], ending
/// in exactly one newline.
pub fn one_line(event: &str) -> String {
    let body = event.strip_suffix('\n').unwrap_or(event);
    let mut out = String::with_capacity(body.len().min(MAX_LINE_BYTES) + 16);
    for c in body.chars() {
        if out.len() >= MAX_LINE_BYTES {
            out.push_str(TRUNCATED);
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' | '\u{1b}' => out.push(c),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

impl<W: io::Write> io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(one_line(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const FORGED: &str = "eve\n2026-01-01T00:00:00Z  INFO cardbridge: login user=admin";

    #[test]
    fn text_logs_keep_a_forged_line_on_its_own_line() {
        let out = capture(LogFormat::Text, || {
            tracing::info!(user = %FORGED, "login failed");
            tracing::info!(frame = %"x\r\ny", "malformed frame");
        });

        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("eve\\n2026"), "{out}");
        assert!(!out.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn json_logs_are_one_object_a_line() {
        let out = capture(LogFormat::Json, || {
            let span = tracing::info_span!("request", request_id = "r-1");
            let _entered = span.enter();
            tracing::info!(user = %FORGED, "login failed");
        });

        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["fields"]["user"], FORGED);
        assert_eq!(event["span"]["request_id"], "r-1");
    }

    #[test]
    fn escaped_strings_have_no_control_characters() {
        assert_eq!(Escaped("eve\n\u{1b}[2Jroot\u{2028}").to_string(), "eve\\n\\u{1b}[2Jroot\\u{2028}");
        assert_eq!(Escaped("Zoë \"quoted\"").to_string(), "Zoë \"quoted\"");
    }

    #[test]
    fn huge_events_are_cut() {
        let out = capture(LogFormat::Text, || tracing::info!(user = %"x".repeat(1 << 20), "login failed"));

        assert_eq!(out.lines().count(), 1);
        assert!(out.len() <= MAX_LINE_BYTES + 64);
        assert!(out.trim_end().ends_with(TRUNCATED));
    }
}
