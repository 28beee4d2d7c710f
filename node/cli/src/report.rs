//! The one place the CLI writes output. A [`Report`] holds a result both as
//! text for people and as JSON for scripts; a [`Printer`] writes reports in
//! the form `--json` chose. A reader that closes stdout early
//! (`fedpeg watch | head`) is a normal way to stop, not an error: the printer
//! turns it into [`ClosedPipe`], which `main` ends on quietly with status 0.

use std::fmt;
use std::io::{self, Stderr, StdoutLock, Write};

use serde_json::{json, Value};

/// A command's result, as text and as JSON.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines for people, without the final newline; `None`: nothing in text mode.
    text: Option<String>,
    /// One JSON value, printed on one line; `None`: nothing with `--json`.
    json: Option<Value>,
    /// A remark for people, printed to stderr in text mode only.
    note: Option<String>,
}

impl Report {
    /// The same result as text and as JSON.
    pub fn new(text: impl Into<String>, json: Value) -> Report {
        Report {
            text: Some(text.into()),
            json: Some(json),
            note: None,
        }
    }

    /// Progress for people only: `--json` output leaves it out.
    pub fn text_only(text: impl Into<String>) -> Report {
        Report {
            text: Some(text.into()),
            ..Report::default()
        }
    }

    /// Nothing to print: the command printed as it went.
    pub fn empty() -> Report {
        Report::default()
    }

    /// Adds a remark for people, printed to stderr after the text.
    pub fn with_note(self, note: impl Into<String>) -> Report {
        Report {
            note: Some(note.into()),
            ..self
        }
    }
}

/// Stdout was closed by its reader: stop quietly and exit 0, like `yes | head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedPipe;

impl fmt::Display for ClosedPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for ClosedPipe {}

/// Whether `e` (or any error it wraps) is a [`ClosedPipe`].
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<ClosedPipe>())
}

/// Writes reports to stdout as text, or as one JSON object per line.
pub struct Printer<O = StdoutLock<'static>, E = Stderr> {
    out: O,
    err: E,
    json: bool,
}

impl Printer {
    /// A printer on this process's stdout (locked for the program's life: the
    /// CLI is its only writer) and stderr.
    pub fn stdio(json: bool) -> Printer {
        Printer::new(io::stdout().lock(), io::stderr(), json)
    }
}

impl<O: Write, E: Write> Printer<O, E> {
    /// A printer on the given writers.
    pub fn new(out: O, err: E, json: bool) -> Printer<O, E> {
        Printer { out, err, json }
    }

    /// Prints `r` in this printer's form. Fails with [`ClosedPipe`] once the
    /// reader has closed stdout.
    pub fn emit(&mut self, r: &Report) -> anyhow::Result<()> {
        let body = if self.json {
            r.json.as_ref().map(Value::to_string)
        } else {
            r.text.clone()
        };
        if let Some(body) = body {
            writeln!(self.out, "{body}")
                .and_then(|()| self.out.flush())
                .map_err(stdout_error)?;
        }
        if let Some(note) = &r.note {
            self.hint(note);
        }
        Ok(())
    }

    /// A remark for people on stderr; left out with `--json`.
    pub fn hint(&mut self, msg: &str) {
        if !self.json {
            self.warn(msg);
        }
    }

    /// A warning on stderr in either form; the command carries on.
    pub fn warn(&mut self, msg: &str) {
        // Nowhere left to report a failure to write to stderr: drop it.
        let _ = writeln!(self.err, "{msg}");
    }

    /// The error that ends the command: `error: …` on stderr, or
    /// `{"error": …}` on stdout with `--json`.
    pub fn error(&mut self, e: &anyhow::Error) {
        let msg = format!("{e:#}");
        // The process exits 1 next; a failed write changes nothing.
        let _ = if self.json {
            writeln!(self.out, "{}", json!({ "error": msg })).and_then(|()| self.out.flush())
        } else {
            writeln!(self.err, "error: {msg}")
        };
    }
}

fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(ClosedPipe)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stdout whose reader has gone after `room` bytes.
    struct ClosedAfter {
        room: usize,
        written: Vec<u8>,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() + buf.len() > self.room {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A stdout that fails with some other error.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn printed(r: &Report, json: bool) -> (String, String) {
        let mut p = Printer::new(Vec::new(), Vec::new(), json);
        p.emit(r).unwrap();
        let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (s(p.out), s(p.err))
    }

    fn sample() -> Report {
        Report::new(
            "fprt1abc: 5 sats\n  pending",
            json!({ "balance": 5, "address": "fprt1abc" }),
        )
        .with_note("keep it safe")
    }

    #[test]
    fn text_mode_prints_the_lines_and_the_note_on_stderr() {
        let (out, err) = printed(&sample(), false);
        assert_eq!(out, "fprt1abc: 5 sats\n  pending\n");
        assert_eq!(err, "keep it safe\n");
    }

    #[test]
    fn json_mode_prints_one_compact_line_and_no_note() {
        let (out, err) = printed(&sample(), true);
        assert_eq!(out, "{\"address\":\"fprt1abc\",\"balance\":5}\n");
        assert_eq!(err, "");
    }

    #[test]
    fn text_only_reports_are_left_out_of_json_and_empty_ones_print_nothing() {
        let progress = Report::text_only("burn submitted: ab12");
        assert_eq!(printed(&progress, true), (String::new(), String::new()));
        assert_eq!(printed(&progress, false).0, "burn submitted: ab12\n");
        assert_eq!(
            printed(&Report::empty(), false),
            (String::new(), String::new())
        );
    }

    #[test]
    fn a_closed_stdout_stops_the_stream_with_closed_pipe() {
        let out = ClosedAfter {
            room: 20,
            written: vec![],
        };
        let mut p = Printer::new(out, Vec::new(), false);
        let line = Report::new("block 1 ab12", json!({ "height": 1 }));
        let results: Vec<_> = (0..5).map(|_| p.emit(&line)).collect();
        assert!(results[0].is_ok());
        let e = results[1].as_ref().unwrap_err();
        assert!(is_closed_pipe(e), "{e:#}");
        assert!(is_closed_pipe(
            &anyhow::Error::new(ClosedPipe).context("watch")
        ));
        assert_eq!(p.out.written, b"block 1 ab12\n");
        assert!(p.err.is_empty(), "nothing on stderr");
    }

    #[test]
    fn other_write_errors_are_errors_not_a_quiet_stop() {
        let mut p = Printer::new(Full, Vec::new(), true);
        let e = p.emit(&Report::new("x", json!(1))).unwrap_err();
        assert!(!is_closed_pipe(&e));
        assert_eq!(format!("{e:#}"), "cannot write to stdout: disk full");
    }

    #[test]
    fn the_final_error_goes_to_stderr_or_as_json_to_stdout() {
        let e = anyhow::anyhow!("not found").context("block");
        let mut p = Printer::new(Vec::new(), Vec::new(), false);
        p.error(&e);
        assert_eq!(
            (p.out.as_slice(), p.err.as_slice()),
            (&b""[..], &b"error: block: not found\n"[..])
        );
        let mut p = Printer::new(Vec::new(), Vec::new(), true);
        p.error(&e);
        assert_eq!(p.out, b"{\"error\":\"block: not found\"}\n");
        assert!(p.err.is_empty());
    }
}
