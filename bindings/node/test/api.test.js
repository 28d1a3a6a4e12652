'use strict'
// This project's own API: decide/report with the default model's whole answer, the guard,
// run(), per-route physics.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { Atrion, Guard, ShedError, MODES, REASONS, PRIORITIES } = require('..')
const { FAST_SCAR, trip } = require('./helpers.js')

test("the names come from the core's lists", () => {
  assert.deepEqual(MODES, ['bootstrap', 'operational', 'open', 'half_open'])
  assert.deepEqual(PRIORITIES, ['critical', 'high', 'normal', 'low', 'bulk'])
  for (const r of ['healthy', 'bootstrap', 'open', 'throttled', 'overloaded', 'probe_quota']) assert.ok(REASONS.includes(r), r)
})

test('decide answers in full; report returns the mode', () => {
  const a = new Atrion()
  const d = a.decide('GET /x')
  assert.deepEqual(d, { admitted: true, verdict: 'admit', reason: 'bootstrap', mode: 'bootstrap', resistance: 10, retryAfterMs: undefined })
  for (let i = 0; i < 9; i++) assert.equal(a.report('GET /x', 3, true), 'bootstrap')
  assert.equal(a.report('GET /x', 3, true, 0.2), 'operational')
  assert.equal(a.decide('GET /x', 'bulk').reason, 'healthy')
  assert.throws(() => a.decide('GET /x', 'urgent'), /unknown priority/)
  assert.throws(() => a.report('GET /x', Number.NaN, true), /latencyMs/)
  assert.throws(() => a.report('GET /x', 1, true, 3), /saturation/)
})

test('a failing route is shed with a retry-after; critical traffic too once open', async () => {
  const a = new Atrion({ physics: FAST_SCAR })
  const d = await trip(a, 'GET /pay')
  assert.equal(d.verdict, 'shed')
  assert.equal(d.mode, 'open')
  assert.equal(d.reason, 'open')
  assert.ok(d.retryAfterMs > 0, JSON.stringify(d))
  assert.equal(a.decide('GET /pay', 'critical').admitted, false)
  assert.equal(a.route('GET /pay', { latencyMs: 5 }).reason, 'Circuit breaker open')
})

test('long route ids (past the inline buffer) and non-ASCII ids decide on their own route', () => {
  const a = new Atrion()
  const long = `GET /${'x'.repeat(600)}`
  const other = `GET /${'x'.repeat(599)}y`
  for (let i = 0; i < 10; i++) a.report(long, 1, true)
  assert.equal(a.decide(long).mode, 'operational')
  assert.equal(a.decide(other).mode, 'bootstrap')
  a.report('GET /café/ü', 1, true)
  assert.deepEqual(a.getRoutes().filter((r) => r.startsWith('GET /caf')), ['GET /café/ü'])
})

test('a guard reports once, its outcome and latency; a shed guard reports nothing', async () => {
  const a = new Atrion({ physics: FAST_SCAR })
  const g = a.enter('GET /g', 'high')
  assert.ok(g instanceof Guard)
  assert.equal(g.admitted, true)
  try {
    g.fail()
  } finally {
    g.end()
  }
  g.end()
  assert.equal(a.getState('GET /g').tickCount, 1, 'reported once')
  assert.equal(a.getState('GET /g').pressure.error, 1, 'as a failure')
  await trip(a, 'GET /g')
  const before = a.getState('GET /g').tickCount
  const shed = a.enter('GET /g')
  assert.equal(shed.admitted, false)
  shed.end()
  assert.equal(a.getState('GET /g').tickCount, before)
})

test('run() reports a throw as a failure and throws ShedError when shed', async () => {
  const a = new Atrion({ physics: FAST_SCAR })
  assert.equal(await a.run('job', async () => 42), 42)
  await assert.rejects(a.run('job', async () => { throw new Error('boom') }), /boom/)
  assert.ok(a.getState('job').pressure.error > 0.5, 'the failure was learned')
  await trip(a, 'job')
  await assert.rejects(a.run('job', () => 1), (e) => e instanceof ShedError && e.retryAfterMs > 0 && e.route === 'job')
})

test('per-route physics: a route given a latency objective is judged by it, not by its learned normal', () => {
  const a = new Atrion()
  a.setRouteConfig('GET /slow/*', { normal: { slo_ms: 100 } })
  assert.throws(() => a.setRouteConfig('GET /x', { model: 'reference' }), /model/)
  for (let i = 0; i < 20; i++) {
    a.report('GET /slow/report', 2000, true)
    a.report('GET /fast', 2000, true)
  }
  const judged = a.getState('GET /slow/report').pressure.latency
  const learned = a.getState('GET /fast').pressure.latency
  assert.ok(judged > 0.9, `2 s is far over a 100 ms objective: ${judged}`)
  assert.ok(learned < 0, `2 s is what the other route learned as normal: ${learned}`)
  a.setRouteConfig('GET /slow/*', null)
})

test('the throttle share is in the answer while it acts', async () => {
  const a = new Atrion({ physics: { throttle: { enabled: true } } })
  // Unknown to the throttle: no field at all.
  assert.equal('throttle' in a.decide('quiet'), false)
})
