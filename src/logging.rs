//! Log output: one line per event on stderr, without timestamps (the journal and the terminal
//! add their own). Under systemd each line also carries its syslog priority.
//!
//! A service's stderr is a stream into journald, which records every line at the unit's
//! default priority (info) unless the line starts with a `<N>` prefix (`SyslogLevelPrefix=`,
//! on by default). With the prefix, `journalctl -p warning -u rs-agent` shows the failed
//! repairs and the real servers that went DOWN, and nothing else.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: `RS_AGENT_LOG` (an `EnvFilter`) if set, else `level`.
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RS_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A failed write to stderr (a closed pipe) is not worth a message: the default would
        // `eprintln!` it, which panics on the same broken stderr. A daemon keeps running.
        .log_internal_errors(false)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let format = tracing_subscriber::fmt::format().without_time();
    if journal {
        builder.event_format(JournalPriority(format)).init();
    } else {
        builder.event_format(format).init();
    }
}

/// The prefix for a line written to stderr outside `tracing` (the one-line error a command
/// exits with): `<3>` under journald, so `journalctl -p err` shows why a unit failed.
pub fn error_prefix() -> &'static str {
    if stderr_is_journal() {
        "<3>"
    } else {
        ""
    }
}

/// True when stderr is journald's stream: systemd then sets `JOURNAL_STREAM` to the stream's
/// `device:inode` (compared, so that a child whose stderr was redirected is not fooled).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    names_stream(&stream.to_string_lossy(), meta.dev(), meta.ino())
}

/// `JOURNAL_STREAM` is `DEVICE:INODE`, both decimal.
fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .is_some_and(|(d, i)| d == dev.to_string() && i == ino.to_string())
}

/// The syslog priority journald records for a `tracing` level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes each event's line with `<priority>` (sd-daemon(3)), then formats it as `F` does.
pub struct JournalPriority<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what the subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_start_with_their_syslog_priority() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("e");
            tracing::warn!("192.0.2.11:80 is DOWN");
            tracing::info!(change = "add address", "applied");
            tracing::debug!("d");
        });
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        assert!(
            text.contains("<4> WARN") && text.contains("is DOWN"),
            "{text}"
        );
        assert!(text.contains("applied change=\"add address\""), "{text}");
    }

    #[test]
    fn journal_stream_must_name_this_very_stream() {
        assert!(names_stream("8:4242", 8, 4242));
        assert!(!names_stream("8:4242", 8, 4243));
        assert!(!names_stream("9:4242", 8, 4242));
        assert!(!names_stream("8:42420", 8, 4242));
        assert!(!names_stream("", 8, 4242));
    }
}
