//! Criterion benchmarks of Atrion beside peer crates; they live in `benches/`. This library is
//! empty: the crate exists so that heavy comparison dependencies stay out of the published ones.
