//! # atrion-trace
//!
//! Reading telemetry traces: JSON lines or CSV, one request per line, each row validated
//! into a [`Row`] or a [`RowError`] that names its line; what makes the whole input
//! unreadable is a [`TraceError`].
//!
//! Its users: `atrion replay` (every row through the real engine) and the wind tunnel
//! (`atrion-sim`: a scenario's arrivals replayed from a trace). It is a crate of its own so
//! that both read one format without one depending on the other, and so that the core
//! stays free of parsing dependencies (csv, serde_json). The reader takes any
//! [`std::io::BufRead`]; opening files is the caller's.
//!
//! - The input is read once, as a stream (a pipe or `/dev/stdin` works): the format is
//!   detected by peeking at its first bytes, never by reopening it.
//! - A line is at most [`MAX_LINE`] bytes: past that the input is not a trace (a binary
//!   file, `/dev/zero`), and reading stops instead of growing memory.
//! - A UTF-8 byte-order mark is skipped; a JSON array is refused with the way to convert it.
//! - Timestamps are parsed exactly: an integer is an integer number of [`TimeUnit`]s (epoch
//!   milliseconds keep their last digit); a value that would be past the year 2286 in the
//!   unit given is refused as not being in that unit (epoch microseconds read as
//!   milliseconds, say), with the unit it more likely is.

use std::io::BufRead;

use atrion_core::{Priority, Telemetry, Timestamp};
use serde::{Deserialize, Serialize};

/// The longest line read, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// The latest timestamp accepted, in nanoseconds since the epoch (the year 2286): a later
/// one is a unit mistake.
const LATEST_NS: u128 = 10_000_000_000_000_000_000;

/// One valid row of a trace.
#[derive(Debug, Clone)]
pub struct Row {
    /// When the request happened.
    pub at: Timestamp,
    /// The route it went to.
    pub route: String,
    /// What was measured.
    pub telemetry: Telemetry,
    /// Its priority, when the trace gives one.
    pub priority: Option<Priority>,
}

/// A row that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RowError {
    /// The 1-based line of the input.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// What makes an input unreadable as a trace; reading stops.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The input cannot be read (a directory, a device error).
    #[error("cannot read line {line}: {source}")]
    Io {
        /// The line being read.
        line: u64,
        /// The system's error.
        source: std::io::Error,
    },
    /// A line longer than [`MAX_LINE`]: a binary file or an endless stream, not a trace.
    #[error("line {line} is longer than {max} bytes: not a trace")]
    LineTooLong {
        /// The line.
        line: u64,
        /// [`MAX_LINE`].
        max: usize,
    },
    /// A JSON document holding an array.
    #[error("a JSON array: a trace is JSON lines, one object per line (convert with `jq -c '.[]'`)")]
    JsonArray,
    /// A CSV header that does not name the columns.
    #[error("CSV header (line {line}): {reason}")]
    Header {
        /// The header's line.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// The unit of a trace's timestamps (the `timestamp_ms` column holds this unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Seconds.
    S,
    /// Milliseconds (the default).
    #[default]
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TimeUnit {
    /// Nanoseconds per unit.
    pub fn nanos(self) -> u64 {
        match self {
            TimeUnit::S => 1_000_000_000,
            TimeUnit::Ms => 1_000_000,
            TimeUnit::Us => 1_000,
            TimeUnit::Ns => 1,
        }
    }

    /// The unit's symbol.
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::S => "s",
            TimeUnit::Ms => "ms",
            TimeUnit::Us => "us",
            TimeUnit::Ns => "ns",
        }
    }

    /// The finer unit a too-large value more likely is.
    fn finer(self) -> Option<TimeUnit> {
        match self {
            TimeUnit::S => Some(TimeUnit::Ms),
            TimeUnit::Ms => Some(TimeUnit::Us),
            TimeUnit::Us => Some(TimeUnit::Ns),
            TimeUnit::Ns => None,
        }
    }
}

/// A trace's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values under a header row naming the columns.
    Csv,
}

const COLUMNS: [&str; 6] = ["timestamp_ms", "route", "latency_ms", "error", "saturation", "priority"];

/// The rows of a trace, read once from `R`. Iterate for the rows; then
/// [`TraceReader::finish`] says whether reading stopped on an unreadable input.
#[derive(Debug)]
pub struct TraceReader<R> {
    reader: R,
    format: Format,
    unit: TimeUnit,
    line: u64,
    columns: [Option<usize>; 6],
    buf: Vec<u8>,
    fatal: Option<TraceError>,
}

impl<R: BufRead> TraceReader<R> {
    /// Starts reading: skips a byte-order mark, detects the format when `format` is `None`
    /// (`{` JSON lines, `[` a JSON array (refused), anything else CSV), and reads a CSV
    /// header.
    pub fn new(mut reader: R, format: Option<Format>, unit: TimeUnit) -> Result<Self, TraceError> {
        let io = |source| TraceError::Io { line: 1, source };
        let head = reader.fill_buf().map_err(io)?;
        if head.starts_with(b"\xEF\xBB\xBF") {
            reader.consume(3);
        }
        let head = reader.fill_buf().map_err(io)?;
        let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first == Some(b'[') && format != Some(Format::Csv) {
            return Err(TraceError::JsonArray);
        }
        let format = format.unwrap_or(if first.is_none_or(|b| b == b'{') { Format::Jsonl } else { Format::Csv });
        let mut t = TraceReader { reader, format, unit, line: 0, columns: [None; 6], buf: Vec::new(), fatal: None };
        if format == Format::Csv {
            t.read_header()?;
        }
        Ok(t)
    }

    /// The format read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Why reading stopped early, if it did.
    pub fn finish(self) -> Result<(), TraceError> {
        self.fatal.map_or(Ok(()), Err)
    }

    /// The next line into `self.buf` (without its line ending); `Ok(false)` at the end.
    fn next_line(&mut self) -> Result<bool, TraceError> {
        self.buf.clear();
        self.line += 1;
        let line = self.line;
        let limit = MAX_LINE as u64 + 1;
        let n = std::io::Read::take(&mut self.reader, limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| TraceError::Io { line, source })?;
        if n == 0 {
            return Ok(false);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if n as u64 >= limit {
            return Err(TraceError::LineTooLong { line, max: MAX_LINE });
        }
        Ok(true)
    }

    fn read_header(&mut self) -> Result<(), TraceError> {
        loop {
            if !self.next_line()? {
                return Ok(()); // no header, no rows
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                break;
            }
        }
        let line = self.line;
        let header = |reason: String| TraceError::Header { line, reason };
        let record = csv_record(&self.buf).map_err(header)?;
        for (i, name) in record.iter().enumerate() {
            match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
                Some(k) if self.columns[k].is_some() => return Err(header(format!("column `{name}` appears twice"))),
                Some(k) => self.columns[k] = Some(i),
                None => return Err(header(format!("unknown column `{name}`, expected {}", COLUMNS.join(", ")))),
            }
        }
        if let Some(k) = (0..5).find(|&k| self.columns[k].is_none()) {
            return Err(header(format!("missing column `{}`", COLUMNS[k])));
        }
        Ok(())
    }

    fn json_row(&self, text: &str) -> Result<Row, RowError> {
        let fail = |reason: String| RowError { line: self.line, reason };
        let r: JsonRow = serde_json::from_str(text).map_err(|e| fail(format!("malformed JSON: {e}")))?;
        let at = match &r.timestamp_ms {
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(i) => self.exact(i),
                None => self.fractional(n.as_f64().unwrap_or(f64::NAN), &n.to_string()),
            },
            other => Err(format!("timestamp_ms must be a number, got {other}")),
        }
        .map_err(fail)?;
        let error = match &r.error {
            serde_json::Value::Bool(failed) => f64::from(u8::from(*failed)),
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => return Err(fail(format!("error must be true, false or a rate in [0, 1], got {other}"))),
        };
        build(self.line, at, r.route, r.latency_ms, error, r.saturation, r.priority.as_deref())
    }

    fn csv_row(&self, bytes: &[u8]) -> Result<Row, RowError> {
        let line = self.line;
        let fail = |reason: String| RowError { line, reason };
        let record = csv_record(bytes).map_err(fail)?;
        let field = |k: usize| self.columns[k].and_then(|i| record.get(i)).unwrap_or("");
        let number = |k: usize| -> Result<f64, RowError> {
            field(k).parse::<f64>().map_err(|_| fail(format!("{} must be a number, got `{}`", COLUMNS[k], field(k))))
        };
        let ts = field(0);
        let at = match ts.parse::<u64>() {
            Ok(i) => self.exact(i),
            Err(_) => self.fractional(number(0)?, ts),
        }
        .map_err(fail)?;
        let error = match field(3).to_ascii_lowercase().as_str() {
            "true" => 1.0,
            "false" => 0.0,
            _ => number(3)?,
        };
        build(line, at, field(1).to_owned(), number(2)?, error, number(4)?, Some(field(5)))
    }

    /// An integer timestamp, exactly.
    fn exact(&self, value: u64) -> Result<Timestamp, String> {
        let ns = u128::from(value) * u128::from(self.unit.nanos());
        self.plausible(ns, &value.to_string())
    }

    /// A timestamp with a fraction (or too large for an integer), rounded to the nanosecond.
    fn fractional(&self, value: f64, text: &str) -> Result<Timestamp, String> {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("timestamp_ms must be a finite number >= 0, got {text}"));
        }
        // The whole part exactly, the fraction rounded to the nanosecond.
        let (whole, fraction) = (value.trunc(), value.fract());
        if whole >= u64::MAX as f64 {
            return self.plausible(LATEST_NS + 1, text);
        }
        let unit = self.unit.nanos();
        let ns = u128::from(whole as u64) * u128::from(unit) + (fraction * unit as f64).round() as u128;
        self.plausible(ns, text)
    }

    fn plausible(&self, ns: u128, text: &str) -> Result<Timestamp, String> {
        if ns > LATEST_NS {
            let unit = self.unit.name();
            let hint = match self.unit.finer() {
                Some(finer) => format!("; if the trace is in {}, pass --time-unit {}", finer.name(), finer.name()),
                None => String::new(),
            };
            return Err(format!("timestamp {text} does not look like {unit}: it is past the year 2286{hint}"));
        }
        Ok(Timestamp::from_nanos(ns as u64))
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.fatal.is_some() {
            return None;
        }
        loop {
            match self.next_line() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.fatal = Some(e);
                    return None;
                }
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let row = match self.format {
                Format::Jsonl => match std::str::from_utf8(&self.buf) {
                    Ok(text) => self.json_row(text),
                    Err(_) => Err(RowError { line: self.line, reason: "not UTF-8 text".into() }),
                },
                Format::Csv => self.csv_row(&self.buf),
            };
            return Some(row);
        }
    }
}

/// One line of CSV as a record; a quote left open is an error, not a field that runs on.
fn csv_record(line: &[u8]) -> Result<csv::StringRecord, String> {
    if line.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
        return Err("unterminated quote (a row is one line)".into());
    }
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).trim(csv::Trim::All).flexible(true).from_reader(line);
    let mut record = csv::StringRecord::new();
    match rdr.read_record(&mut record) {
        Ok(_) => Ok(record),
        Err(e) => Err(format!("unreadable CSV: {e}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    timestamp_ms: serde_json::Value,
    route: String,
    latency_ms: f64,
    error: serde_json::Value,
    saturation: f64,
    #[serde(default)]
    priority: Option<String>,
}

fn build(
    line: u64,
    at: Timestamp,
    route: String,
    latency_ms: f64,
    error: f64,
    saturation: f64,
    priority: Option<&str>,
) -> Result<Row, RowError> {
    let fail = |reason: String| RowError { line, reason };
    if route.is_empty() {
        return Err(fail("route is empty".into()));
    }
    let telemetry = Telemetry::new(latency_ms, error, saturation).map_err(|e| fail(e.to_string()))?;
    let priority = match priority.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(p.parse::<Priority>().map_err(|e| fail(e.to_string()))?),
    };
    Ok(Row { at, route, telemetry, priority })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &[u8], unit: TimeUnit) -> (Vec<Result<Row, RowError>>, Result<(), TraceError>) {
        let mut t = TraceReader::new(text, None, unit).unwrap();
        let rows: Vec<_> = t.by_ref().collect();
        (rows, t.finish())
    }

    #[test]
    fn jsonl_rows_and_errors_carry_line_numbers() {
        let text = r#"{"timestamp_ms": 0, "route": "a", "latency_ms": 10, "error": false, "saturation": 0.1}

{"timestamp_ms": 5, "route": "a", "latency_ms": -1, "error": 0.0, "saturation": 0.1}
{"timestamp_ms": 6, "route": "a", "latency_ms": 1, "error": 0.5, "saturation": 0.1, "priority": "bulk"}
not json
{"timestamp_ms": 7, "route": "a", "latency_ms": 1, "error": 0.5, "saturation": 0.1, "priority": "vip"}
{"timestamp_ms": 8, "route": "a", "latency_ms": 1, "error": "maybe", "saturation": 0.1}
"#;
        let (rows, end) = rows(text.as_bytes(), TimeUnit::Ms);
        end.unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0].as_ref().unwrap().route, "a");
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("latency_ms"), "{}", e.reason);
        assert_eq!(rows[2].as_ref().unwrap().priority, Some(Priority::Bulk));
        assert_eq!(rows[3].as_ref().unwrap_err().line, 5);
        assert!(rows[4].as_ref().unwrap_err().reason.contains("unknown priority"));
        let e = &rows[5].as_ref().unwrap_err().reason;
        assert_eq!(e, "error must be true, false or a rate in [0, 1], got \"maybe\"");
    }

    #[test]
    fn csv_rows_by_header_name() {
        let text = "route,timestamp_ms,latency_ms,error,saturation\na,0,10,true,0.2\nb,1.5,x,0,0.2\nc,2,10,0.1,1.2\n";
        let (rows, end) = rows(text.as_bytes(), TimeUnit::Ms);
        end.unwrap();
        let first = rows[0].as_ref().unwrap();
        assert_eq!((first.route.as_str(), first.telemetry.error()), ("a", 1.0));
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("latency_ms must be a number"));
        assert!(rows[2].as_ref().unwrap_err().reason.contains("saturation"));
        let e = TraceReader::new("route,when\n".as_bytes(), None, TimeUnit::Ms).unwrap_err();
        assert!(matches!(e, TraceError::Header { line: 1, .. }), "{e}");
    }

    #[test]
    fn an_unterminated_quote_is_its_own_error_and_does_not_swallow_the_next_row() {
        let text = "timestamp_ms,route,latency_ms,error,saturation\n1,\"a,10,0,0.1\n2,b,10,0,0.1\n";
        let (rows, _) = rows(text.as_bytes(), TimeUnit::Ms);
        assert!(rows[0].as_ref().unwrap_err().reason.contains("unterminated quote"));
        assert_eq!(rows[1].as_ref().unwrap().route, "b");
    }

    #[test]
    fn a_bom_is_skipped_and_a_json_array_refused() {
        let text = b"\xEF\xBB\xBF{\"timestamp_ms\": 1, \"route\": \"a\", \"latency_ms\": 1, \"error\": 0, \"saturation\": 0}\n";
        let (rows, _) = rows(text, TimeUnit::Ms);
        assert_eq!(rows[0].as_ref().unwrap().route, "a");
        let e = TraceReader::new(&b"  [{\"a\": 1}]"[..], None, TimeUnit::Ms).unwrap_err();
        assert!(matches!(e, TraceError::JsonArray), "{e}");
    }

    #[test]
    fn epoch_timestamps_are_exact_and_other_units_are_refused_with_a_hint() {
        let row = |ts: &str| {
            format!(
                "{{\"timestamp_ms\": {ts}, \"route\": \"a\", \"latency_ms\": 1, \"error\": 0, \"saturation\": 0}}\n"
            )
        };
        let text = row("1700000000000") + &row("1700000000001") + &row("1700000000001.5");
        let (rows, _) = rows(text.as_bytes(), TimeUnit::Ms);
        let at: Vec<u64> = rows.iter().map(|r| r.as_ref().unwrap().at.as_nanos()).collect();
        assert_eq!(at[0], 1_700_000_000_000_000_000);
        assert_eq!(at[1] - at[0], 1_000_000, "one millisecond apart, exactly");
        assert_eq!(at[2] - at[1], 500_000);
        // Epoch microseconds in a millisecond column: refused, naming the likely unit.
        let (rows, _) = self::rows(row("1700000000000000").as_bytes(), TimeUnit::Ms);
        let e = &rows[0].as_ref().unwrap_err().reason;
        assert!(e.contains("does not look like ms") && e.contains("--time-unit us"), "{e}");
        // ...and read as what they are when told.
        let (rows, _) = self::rows(row("1700000000000001").as_bytes(), TimeUnit::Us);
        assert_eq!(rows[0].as_ref().unwrap().at.as_nanos(), 1_700_000_000_000_001_000);
        let csv = "timestamp_ms,route,latency_ms,error,saturation\n1700000000000123,a,1,0,0\n";
        let (rows, _) = self::rows(csv.as_bytes(), TimeUnit::Us);
        assert_eq!(rows[0].as_ref().unwrap().at.as_nanos(), 1_700_000_000_000_123_000);
    }

    #[test]
    fn an_endless_line_stops_reading_with_bounded_memory() {
        let zeros = std::io::BufReader::new(std::io::Read::take(std::io::repeat(0), 3 * MAX_LINE as u64));
        let mut t = TraceReader::new(zeros, Some(Format::Jsonl), TimeUnit::Ms).unwrap();
        assert!(t.next().is_none());
        assert!(matches!(t.finish(), Err(TraceError::LineTooLong { line: 1, .. })));
    }
}
