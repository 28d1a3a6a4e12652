//! Attacks on the sidecar, over real TCP against a real `atrion serve`: one module per
//! defect class of the sidecar's threat model (`docs/RELIABILITY.md`). Each attack asserts
//! what must still hold after it (another client's verdicts, `/healthz` answering, memory
//! back near its baseline, nothing changed by a refused request), never a speed.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod browser;
mod connections;
mod dashboard;
mod paths;
mod policies;
mod restart;
mod restore;
mod routes;
mod store_load;
mod tickets;
mod wire;
