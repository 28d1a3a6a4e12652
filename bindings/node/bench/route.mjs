// Speed of route(): this package beside the original, in one Node process.
// Not a test: it prints figures. Run after a release build (scripts/build.sh):
//
//   node bench/route.mjs [ORIGINAL.mjs]
//
// ORIGINAL.mjs: the original built by scripts/build-original.sh (optional; without it only
// this package is measured). Two ways of calling, each with calm telemetry
// ({ latencyMs: 1 }: under every baseline) on one route:
// - paced: one call per millisecond of wall time, each call timed alone (caches as cold as
//   a service that calls route() once per request would see them);
// - hot: calls back to back, the mean of a million.
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

async function paced(a, overhead) {
  const ns = []
  for (let i = 0; i < PACED; i++) {
    const t0 = process.hrtime.bigint()
    const d = a.route('api/checkout', telemetry)
    const t1 = process.hrtime.bigint()
    if (!d.allow) throw new Error('calm telemetry was shed')
    ns.push(Math.max(0, Number(t1 - t0) - overhead))
    await sleep(1)
  }
  ns.sort((x, y) => x - y)
  return { median: ns[ns.length >> 1], p99: ns[Math.floor(ns.length * 0.99)] }
}

function hot(a) {
  for (let i = 0; i < 100_000; i++) a.route('api/checkout', telemetry)
  const rounds = []
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < HOT / 5; i++) a.route('api/checkout', telemetry)
    rounds.push(Number(process.hrtime.bigint() - t0) / (HOT / 5))
  }
  rounds.sort((x, y) => x - y)
  return rounds[2]
}

const kinds = ['package (default model)', 'package (reference)']
if (process.argv[2]) kinds.push(`original:${new URL(process.argv[2], `file://${process.cwd()}/`).href}`)

const overhead = timerCost()
console.log(`node ${process.version}; timer cost ${overhead} ns subtracted from paced calls`)
console.log(`paced: ${PACED} calls, one per ms; hot: ${HOT} calls back to back\n`)
const results = {}
for (const kind of kinds) {
  const a = await make(kind)
  const name = kind.startsWith('original:') ? 'original 2fccefa (TypeScript)' : kind
  const p = await paced(a, overhead)
  const h = hot(a)
  results[name] = { p, h }
  console.log(`${name.padEnd(32)} paced median ${String(p.median).padStart(5)} ns  p99 ${String(p.p99).padStart(6)} ns   hot ${h.toFixed(0).padStart(5)} ns/call`)
  await quiet(() => a.disconnect())
}
const orig = results['original 2fccefa (TypeScript)']
if (orig) {
  console.log('\nratio package / original (target <= 0.33):')
  for (const [name, r] of Object.entries(results)) {
    if (r === orig) continue
    console.log(`${name.padEnd(32)} paced ${(r.p.median / orig.p.median).toFixed(2)}   hot ${(r.h / orig.h).toFixed(2)}`)
  }
}
