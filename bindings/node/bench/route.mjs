// Speed of route(): this package beside the original, in one Node process.
// Not a test: it prints figures. Run after a release build (scripts/build.sh):
//
//   node bench/route.mjs [ORIGINAL.mjs]
//
// ORIGINAL.mjs: the original built by scripts/build-original.sh (optional; without it only
// this package is measured). Two ways of calling, each with calm telemetry
// ({ latencyMs: 1 }: under every baseline) on one route:
// - paced: one call of each implementation per millisecond of wall time, in turns (the
//   order rotates), each call timed alone: caches as cold as a service that calls route()
//   once per request would see them, and the same moment's noise for all of them;
// - hot: calls back to back, in 7 rounds (the implementations in turns), the median round.
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'

const require = createRequire(import.meta.url)
const pkg = require('../index.js')

const PACED = Number(process.env.PACED_CALLS ?? 3000)
const HOT = Number(process.env.HOT_CALLS ?? 1_000_000)
const telemetry = { latencyMs: 1 }

function quiet(fn) {
  const log = console.log
  console.log = () => {}
  try {
    return fn()
  } finally {
    console.log = log
  }
}

async function make(kind) {
  if (kind.startsWith('package')) {
    const a = new pkg.Atrion({ model: kind.endsWith('reference') ? 'reference' : 'default' })
    await a.connect()
    return a
  }
  const { Atrion } = await import(kind.slice('original:'.length))
  const a = quiet(() => new Atrion({ engine: 'ts' }))
  await quiet(() => a.connect())
  return a
}

function timerCost() {
  let best = Infinity
  for (let i = 0; i < 10_000; i++) {
    const t0 = process.hrtime.bigint()
    const t1 = process.hrtime.bigint()
    best = Math.min(best, Number(t1 - t0))
  }
  return best
}

// Each implementation gets call sites of its own (functions compiled apart), so that none
// pays for a call site shared with another's class (a polymorphic inline cache).
const oneCall = () => new Function('a', 't', "return a.route('api/checkout', t)")
const manyCalls = () => new Function('a', 'n', 't', "for (let i = 0; i < n; i++) a.route('api/checkout', t)")

async function paced(instances, overhead) {
  const calls = instances.map(oneCall)
  const ns = instances.map(() => [])
  for (let i = 0; i < PACED; i++) {
    for (let k = 0; k < instances.length; k++) {
      const j = (i + k) % instances.length
      const t0 = process.hrtime.bigint()
      const d = calls[j](instances[j], telemetry)
      const t1 = process.hrtime.bigint()
      if (!d.allow) throw new Error('calm telemetry was shed')
      ns[j].push(Math.max(0, Number(t1 - t0) - overhead))
    }
    await sleep(1)
  }
  return ns.map((v) => {
    v.sort((x, y) => x - y)
    return { median: v[v.length >> 1], p99: v[Math.floor(v.length * 0.99)] }
  })
}

/** Rounds of calls back to back, the implementations in turns; the median round of each. */
function hot(instances) {
  const loops = instances.map(manyCalls)
  instances.forEach((a, j) => loops[j](a, 100_000, telemetry))
  const rounds = instances.map(() => [])
  for (let r = 0; r < 7; r++) {
    for (let j = 0; j < instances.length; j++) {
      const t0 = process.hrtime.bigint()
      loops[j](instances[j], HOT / 7, telemetry)
      rounds[j].push(Number(process.hrtime.bigint() - t0) / (HOT / 7))
    }
  }
  return rounds.map((v) => [...v].sort((x, y) => x - y)[3])
}

const kinds = ['package (default model)', 'package (reference)']
if (process.argv[2]) kinds.push(`original:${new URL(process.argv[2], `file://${process.cwd()}/`).href}`)

const overhead = timerCost()
console.log(`node ${process.version}; timer cost ${overhead} ns subtracted from paced calls`)
console.log(`paced: ${PACED} calls, one per ms; hot: ${HOT} calls back to back\n`)
const names = kinds.map((k) => (k.startsWith('original:') ? 'original 2fccefa (TypeScript)' : k))
const instances = []
for (const kind of kinds) instances.push(await make(kind))
const pacedResults = await paced(instances, overhead)
const hotResults = hot(instances)
const results = {}
for (let i = 0; i < kinds.length; i++) {
  const p = pacedResults[i]
  const h = hotResults[i]
  results[names[i]] = { p, h }
  console.log(`${names[i].padEnd(32)} paced median ${String(p.median).padStart(5)} ns  p99 ${String(p.p99).padStart(6)} ns   hot ${h.toFixed(0).padStart(5)} ns/call`)
}
for (const a of instances) await quiet(() => a.disconnect())
const orig = results['original 2fccefa (TypeScript)']
if (orig) {
  console.log('\nratio package / original (target <= 0.33):')
  for (const [name, r] of Object.entries(results)) {
    if (r === orig) continue
    console.log(`${name.padEnd(32)} paced ${(r.p.median / orig.p.median).toFixed(2)}   hot ${(r.h / orig.h).toFixed(2)}`)
  }
}
