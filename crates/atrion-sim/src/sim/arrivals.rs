//! When requests arrive: at a rate (constant or Poisson, following the scenario's traffic
//! pattern), or replayed from a trace's timestamps, looped to fill the scenario.

use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1};

use super::{MS, SEC};
use crate::scenario::{Scenario, Traffic};

/// Arrival times of one route's offered traffic.
#[derive(Debug)]
pub(super) enum Arrivals {
    None,
    Rate { traffic: Traffic, poisson: bool },
    Trace { times: Vec<u64>, span: u64, next: usize, lap: u64 },
}

impl Arrivals {
    /// The next arrival after `now`, if any before `end`; `rng` draws Poisson gaps.
    pub(super) fn next(&mut self, rng: &mut ChaCha8Rng, now: u64, end: u64) -> Option<u64> {
        match self {
            Arrivals::None => None,
            Arrivals::Trace { times, span, next, lap } => {
                if times.is_empty() {
                    return None;
                }
                if *next == times.len() {
                    *next = 0;
                    *lap += *span;
                }
                let t = times[*next] + *lap;
                *next += 1;
                (t < end).then_some(t.max(now))
            }
            Arrivals::Rate { traffic, poisson } => {
                let mut t = now;
                // A zero rate is stepped over in 10 ms steps until traffic resumes.
                loop {
                    if t >= end {
                        return None;
                    }
                    let rate = traffic.rate(t as f64 / SEC);
                    if rate > 0.0 {
                        let gap = if *poisson {
                            let e: f64 = Exp1.sample(rng);
                            e / rate
                        } else {
                            1.0 / rate
                        };
                        let next = t + (gap * SEC).max(1.0) as u64;
                        return (next < end).then_some(next);
                    }
                    t += 10 * MS as u64;
                }
            }
        }
    }
}

pub(super) fn trace_arrivals(
    scenario: &Scenario,
    file: &std::path::Path,
    speed: f64,
) -> Result<Arrivals, crate::ScenarioError> {
    let fail =
        |reason: String| crate::ScenarioError::Trace { scenario: scenario.name.clone(), path: file.to_owned(), reason };
    let f = std::fs::File::open(file).map_err(|e| fail(e.to_string()))?;
    let reader = std::io::BufReader::new(f);
    let csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let format = csv.then_some(atrion_trace::Format::Csv);
    let mut rows =
        atrion_trace::TraceReader::new(reader, format, atrion_trace::TimeUnit::Ms).map_err(|e| fail(e.to_string()))?;
    let mut times = Vec::new();
    for row in rows.by_ref() {
        let r = row.map_err(|e| fail(format!("line {}: {}", e.line, e.reason)))?;
        times.push((r.at.as_nanos() as f64 / speed) as u64);
    }
    rows.finish().map_err(|e| fail(e.to_string()))?;
    times.sort_unstable();
    let first = times.first().copied().unwrap_or(0);
    for t in &mut times {
        *t -= first;
    }
    // A lap lasts the trace's span plus one mean gap, so that looping keeps the rate.
    let last = times.last().copied().unwrap_or(0);
    let gap = if times.len() > 1 { last / (times.len() as u64 - 1) } else { 0 };
    let span = (last + gap).max(1_000_000);
    Ok(Arrivals::Trace { times, span, next: 0, lap: 0 })
}
