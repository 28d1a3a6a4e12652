//! scratch
fn main() {
    let name = std::env::args().nth(1).unwrap();
    let s = atrion_sim::load(&name).unwrap();
    let t = std::time::Instant::now();
    let r = atrion_sim::run_scenario(&s, &atrion_sim::RunOptions::default()).unwrap();
    println!("{}", atrion_sim::text_table(&r));
    dbg_bins(&r);
    let n: u64 = r.results.iter().map(|x| x.summary.requests).sum();
    println!("{:?} {} req {:.1} M/s", t.elapsed(), n, n as f64 / t.elapsed().as_secs_f64() / 1e6);
}
#[allow(dead_code)]
fn dbg_bins(r: &atrion_sim::ScenarioReport) {
    for b in r.results[0].bins.iter().take(5) {
        println!("{b:?}");
    }
}
