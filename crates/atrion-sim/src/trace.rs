//! Reading telemetry traces: JSON lines or CSV, one request per row, each row validated
//! into a [`Row`] or a [`RowError`] that names its line.

use std::io::{BufRead, Read};

use atrion_core::{Priority, Telemetry, Timestamp};
use serde::Deserialize;

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
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowError {
    /// The 1-based line of the file.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The error column: a single outcome or a rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Outcome(bool),
    Rate(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    timestamp_ms: f64,
    route: String,
    latency_ms: f64,
    error: ErrorField,
    saturation: f64,
    #[serde(default)]
    priority: Option<String>,
}

fn build(
    line: u64,
    timestamp_ms: f64,
    route: String,
    latency_ms: f64,
    error: f64,
    saturation: f64,
    priority: Option<&str>,
) -> Result<Row, RowError> {
    let fail = |reason: String| RowError { line, reason };
    if !timestamp_ms.is_finite() || timestamp_ms < 0.0 {
        return Err(fail(format!("timestamp_ms must be a finite number >= 0, got {timestamp_ms}")));
    }
    if route.is_empty() {
        return Err(fail("route is empty".into()));
    }
    let telemetry = Telemetry::new(latency_ms, error, saturation).map_err(|e| fail(e.to_string()))?;
    let priority = match priority.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(p.parse::<Priority>().map_err(|e| fail(e.to_string()))?),
    };
    let at = Timestamp::from_nanos((timestamp_ms * 1e6).round() as u64);
    Ok(Row { at, route, telemetry, priority })
}

/// Rows of a JSON-lines trace; blank lines are skipped.
pub fn jsonl<R: BufRead>(reader: R) -> impl Iterator<Item = Result<Row, RowError>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i as u64 + 1;
        let text = match line {
            Ok(t) => t,
            Err(e) => return Some(Err(RowError { line: line_no, reason: format!("unreadable: {e}") })),
        };
        if text.trim().is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<JsonRow>(&text) {
            Err(e) => Err(RowError { line: line_no, reason: format!("malformed JSON: {e}") }),
            Ok(r) => {
                let error = match r.error {
                    ErrorField::Outcome(failed) => f64::from(u8::from(failed)),
                    ErrorField::Rate(rate) => rate,
                };
                build(line_no, r.timestamp_ms, r.route, r.latency_ms, error, r.saturation, r.priority.as_deref())
            }
        })
    })
}

const COLUMNS: [&str; 6] = ["timestamp_ms", "route", "latency_ms", "error", "saturation", "priority"];

/// Rows of a CSV trace with a header row naming the columns (any order; `priority` optional).
pub fn csv<R: Read>(reader: R) -> Result<impl Iterator<Item = Result<Row, RowError>>, RowError> {
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(reader);
    let headers = rdr.headers().map_err(|e| RowError { line: 1, reason: format!("unreadable header: {e}") })?.clone();
    let mut index = [None; 6];
    for (i, name) in headers.iter().enumerate() {
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            Some(k) => index[k] = Some(i),
            None => return Err(RowError { line: 1, reason: format!("unknown column `{name}`, expected {COLUMNS:?}") }),
        }
    }
    if let Some(k) = (0..5).find(|&k| index[k].is_none()) {
        return Err(RowError { line: 1, reason: format!("missing column `{}`", COLUMNS[k]) });
    }
    Ok(rdr.into_records().map(move |record| {
        let record = record.map_err(|e| RowError {
            line: e.position().map_or(0, |p| p.line()),
            reason: format!("unreadable CSV: {e}"),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |k: usize| index[k].and_then(|i| record.get(i)).unwrap_or("");
        let number = |k: usize| -> Result<f64, RowError> {
            field(k)
                .parse::<f64>()
                .map_err(|_| RowError { line, reason: format!("{} must be a number, got `{}`", COLUMNS[k], field(k)) })
        };
        let error = match field(3).to_ascii_lowercase().as_str() {
            "true" => 1.0,
            "false" => 0.0,
            _ => number(3)?,
        };
        build(line, number(0)?, field(1).to_owned(), number(2)?, error, number(4)?, Some(field(5)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_rows_and_errors_carry_line_numbers() {
        let text = r#"{"timestamp_ms": 0, "route": "a", "latency_ms": 10, "error": false, "saturation": 0.1}

{"timestamp_ms": 5, "route": "a", "latency_ms": -1, "error": 0.0, "saturation": 0.1}
{"timestamp_ms": 6, "route": "a", "latency_ms": 1, "error": 0.5, "saturation": 0.1, "priority": "bulk"}
not json
{"timestamp_ms": 7, "route": "a", "latency_ms": 1, "error": 0.5, "saturation": 0.1, "priority": "vip"}
"#;
        let rows: Vec<_> = jsonl(text.as_bytes()).collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].as_ref().unwrap().route, "a");
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("latency_ms"), "{}", e.reason);
        assert_eq!(rows[2].as_ref().unwrap().priority, Some(Priority::Bulk));
        assert_eq!(rows[3].as_ref().unwrap_err().line, 5);
        assert!(rows[4].as_ref().unwrap_err().reason.contains("unknown priority"));
    }

    #[test]
    fn csv_rows_by_header_name() {
        let text = "route,timestamp_ms,latency_ms,error,saturation\na,0,10,true,0.2\nb,1.5,x,0,0.2\nc,2,10,0.1,1.2\n";
        let rows: Vec<_> = csv(text.as_bytes()).unwrap().collect();
        let first = rows[0].as_ref().unwrap();
        assert_eq!((first.route.as_str(), first.telemetry.error()), ("a", 1.0));
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("latency_ms must be a number"));
        assert!(rows[2].as_ref().unwrap_err().reason.contains("saturation"));
        assert!(csv("route,when\n".as_bytes()).is_err());
    }
}
