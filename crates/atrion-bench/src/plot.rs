//! The fleet harnesses' charts: rows written by `--json`, read back and drawn against the
//! number of nodes with the project's chart code (`atrion_sim::chart`), one line per series.
//! `fleet --plot` and `vfleet --plot` differ only in their rows and panels.

use anyhow::Context;
use atrion_sim::chart::{LinePanel, Series};
use serde::de::DeserializeOwned;

/// Reads `LABEL=FILE.json` inputs, each a JSON array of rows; a NaN written as `null` (no
/// probe converged) reads back as -1, which [`panel`] leaves off.
pub fn read_rows<R: DeserializeOwned>(inputs: &[String]) -> anyhow::Result<Vec<(String, Vec<R>)>> {
    inputs
        .iter()
        .map(|input| {
            let (label, path) = input.split_once('=').context("inputs are LABEL=FILE.json")?;
            let text = std::fs::read_to_string(path)?.replace("null", "-1");
            Ok((label.to_owned(), serde_json::from_str(&text)?))
        })
        .collect()
}

/// One panel: `f` of each row against `nodes` of it, a line per series; negative and
/// non-finite values are no point.
pub fn panel<R>(
    title: &str,
    y_label: &str,
    series: &[(String, Vec<R>)],
    nodes: impl Fn(&R) -> usize,
    f: impl Fn(&R) -> f64,
) -> LinePanel {
    LinePanel {
        title: title.into(),
        y_label: y_label.into(),
        series: series
            .iter()
            .map(|(name, rows)| Series {
                name: name.clone(),
                points: rows
                    .iter()
                    .map(|r| (nodes(r) as f64, f(r)))
                    .filter(|p| p.1.is_finite() && p.1 >= 0.0)
                    .collect(),
            })
            .collect(),
    }
}
