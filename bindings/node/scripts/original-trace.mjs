// Records a trace of the original Atrion (TypeScript, built by scripts/build-original.sh),
// the fixture of crates/atrion-core/tests/core/original-trace.csv: four engines, each fed
// 400 pseudo-random reports (one to three routes, calm, overloaded, fast and flapping
// phases, gaps of 0 to 300 ms) with its clock mocked, and after each report the route's
// mode, resistance, scar and momentum and the shared AutoTuner's statistics. The Rust test
// replays the same reports at the same times on Model::Reference and compares.
//
//   node scripts/original-trace.mjs ORIGINAL.mjs > crates/atrion-core/tests/core/original-trace.csv
const [, , bundle] = process.argv
if (!bundle) {
  console.error('usage: node scripts/original-trace.mjs ORIGINAL.mjs (from scripts/build-original.sh)')
  process.exit(2)
}
const { Atrion, InMemoryProvider } = await import(new URL(bundle, `file://${process.cwd()}/`).href)
const write = (line) => process.stdout.write(`${line}\n`)
let now = 0
Date.now = () => now
console.log = () => {} // the original announces its engine on connect()

// mulberry32: the same pseudo-random reports on every run.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const modes = { BOOTSTRAP: 'bootstrap', OPERATIONAL: 'operational', CIRCUIT_BREAKER: 'open' }
const round = (x, digits) => Math.round(x * 10 ** digits) / 10 ** digits

write('trace,t_ms,route,latency_ms,error_rate,saturation,mode,resistance,scar,momentum,tuner_samples,tuner_mean,tuner_sd')
for (let seed = 1; seed <= 4; seed++) {
  const r = rng(seed)
  const a = new Atrion({ engine: 'ts', provider: new InMemoryProvider() })
  await a.connect()
  now = 1_000_000
  const routes = ['a', 'b', 'c'].slice(0, 1 + (seed % 3))
  let phase = 0
  for (let i = 0; i < 400; i++) {
    if (i % 60 === 0) phase = Math.floor(r() * 4)
    now += r() < 0.1 ? 0 : Math.floor(r() * 300)
    const route = routes[Math.floor(r() * routes.length)]
    let lat, err, sat
    if (phase === 0) [lat, err, sat] = [20 + r() * 150, r() * 0.02, r() * 0.6] // calm
    else if (phase === 1) [lat, err, sat] = [100 + r() * 2000, r() * 0.5, 0.3 + r() * 0.7] // overload
    else if (phase === 2) [lat, err, sat] = [5 + r() * 80, 0, r() * 0.3] // fast
    else [lat, err, sat] = [r() < 0.5 ? 50 : 1500, r() < 0.5 ? 0 : 0.3, 0.5] // flapping
    ;[lat, err, sat] = [round(lat, 3), round(err, 6), round(sat, 6)]
    a.route(route, { latencyMs: lat, errorRate: err, saturation: sat })
    const s = a.getState(route)
    const t = a.getTunerStats()
    write([seed, now, route, lat, err, sat, modes[s.mode], s.resistance, s.scarTissue, s.momentum ?? 0, t.sampleCount, t.mean, t.stdDev].join(','))
  }
}
