// The original implementation's route() alone, as the engine bench's `calm_decide_report_1ms`
// group runs this project's decide + report: the clock moving 1 ms a call (Date.now replaced by
// a counter), healthy telemetry (20 ms, no errors, saturation 0.3), one route and then 10,000
// round-robin; 200,000 warm-up calls (30 per route at least), then the best of seven rounds
// of 1,000,000 calls. Prints nanoseconds per call.
//
//   scripts/build-original.sh ORIGINAL /tmp/atrion-original.mjs   # the original, bundled
//   node bench/original-route.mjs /tmp/atrion-original.mjs
//
// Nothing of the original is in this repository: build-original.sh bundles it from a checkout.
import { performance } from 'node:perf_hooks'

const path = process.argv[2]
if (!path) {
  console.error('usage: node bench/original-route.mjs ORIGINAL.mjs (built by scripts/build-original.sh)')
  process.exit(2)
}
const { Atrion } = await import(new URL(path, `file://${process.cwd()}/`).href)

// The clock: 1 ms a call, read by the original through Date.now.
let ms = 1_700_000_000_000
Date.now = () => ms
const quiet = async (f) => {
  const log = console.log
  console.log = () => {}
  try {
    return await f()
  } finally {
    console.log = log
  }
}

const telemetry = { latencyMs: 20, errorRate: 0, saturation: 0.3 }
const ROUNDS = 7
const CALLS = 1_000_000

for (const routes of [1, 10_000]) {
  const a = await quiet(() => new Atrion({ engine: 'ts' }))
  await quiet(() => a.connect())
  const names = Array.from({ length: routes }, (_, i) => `route-${i}`)
  let i = 0
  const call = () => {
    ms += 1
    a.route(names[i++ % routes], telemetry)
  }
  await quiet(() => {
    for (let k = 0; k < Math.max(200_000, routes * 30); k++) call()
  })
  let best = Infinity
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now()
    await quiet(() => {
      for (let k = 0; k < CALLS; k++) call()
    })
    best = Math.min(best, ((performance.now() - t0) * 1e6) / CALLS)
  }
  console.log(`original route(), ${routes} route(s), 1 ms a call: ${best.toFixed(1)} ns a call (best of ${ROUNDS} x ${CALLS})`)
  await quiet(() => a.disconnect?.())
}
