'use strict'
// The original's Atrion class, as its users call it (its own unit tests are run unchanged
// by scripts/original-tests.sh): the same contract here on both models, and what only the
// reference model promises (the original's physics, its voltage rule and reason strings).

const { test, describe } = require('node:test')
const assert = require('node:assert/strict')
const { Atrion, InMemoryProvider, StoreProvider } = require('..')

for (const model of ['default', 'reference']) {
  describe(`the original's contract, ${model} model`, () => {
    const make = async (options = {}) => {
      const a = new Atrion({ provider: new InMemoryProvider(), autoTuner: false, model, ...options })
      await a.connect()
      return a
    }

    test('connects, names its provider, disconnects', async () => {
      const a = new Atrion({ model })
      assert.equal(a.isConnected, false)
      await a.connect()
      assert.equal(a.isConnected, true)
      assert.equal(a.providerName, 'InMemoryProvider')
      await a.disconnect()
      assert.equal(a.isConnected, false)
    })

    test('a calm first request is allowed in bootstrap, with reason OK', async () => {
      const a = await make()
      const d = a.route('api/test', { latencyMs: 10 })
      assert.deepEqual(Object.keys(d).sort(), ['allow', 'mode', 'reason', 'resistance'])
      assert.equal(d.allow, true)
      assert.equal(d.mode, 'BOOTSTRAP')
      assert.equal(d.reason, 'OK')
      assert.ok(d.resistance >= 10)
    })

    test('state is tracked per route, listed, and leaves bootstrap after ten updates', async () => {
      const a = await make()
      assert.equal(a.getState('api/a'), undefined)
      for (let i = 0; i < 10; i++) {
        assert.equal(a.getState('api/a')?.mode ?? 'BOOTSTRAP', 'BOOTSTRAP')
        a.route('api/a', { latencyMs: 10 })
      }
      a.route('api/b', { latencyMs: 20 })
      const s = a.getState('api/a')
      assert.equal(s.routeId, 'api/a')
      assert.equal(s.mode, 'OPERATIONAL')
      assert.equal(s.tickCount, 10)
      assert.ok(Math.abs(s.lastUpdatedAt - Date.now()) < 60_000, 'a wall-clock timestamp')
      assert.deepEqual(a.getRoutes(), ['api/a', 'api/b'])
    })

    test('reset forgets a route', async () => {
      const a = await make()
      a.route('api/test', { latencyMs: 10 })
      await a.resetRoute('api/test')
      assert.equal(a.getState('api/test'), undefined)
      assert.deepEqual(a.getRoutes(), [])
      a.route('api/test', { latencyMs: 10 })
      assert.equal(a.getState('api/test').tickCount, 1)
    })

    test('tuner stats: undefined when off, learned when on', async () => {
      const off = await make()
      off.route('r', { latencyMs: 10 })
      assert.equal(off.getTunerStats(), undefined)
      const on = await make({ autoTuner: true })
      for (let i = 0; i < 15; i++) on.route('r', { latencyMs: 10 })
      const t = on.getTunerStats()
      assert.ok(t.sampleCount > 0, JSON.stringify(t))
      assert.equal(t.isWarmedUp, false)
      assert.ok(t.mean >= 10)
    })

    test('invalid telemetry is refused, naming the field', async () => {
      const a = await make()
      assert.throws(() => a.route('r', { latencyMs: -1 }), /latency_ms/)
      assert.throws(() => a.route('r', { latencyMs: 1, errorRate: 2 }), /error_rate/)
    })

    test('an observer is told of each update, with transitions', async () => {
      const events = []
      const a = await make({ observer: { onUpdate: (e) => events.push(e) } })
      for (let i = 0; i < 11; i++) a.route('r', { latencyMs: 10 })
      await new Promise((r) => setImmediate(r))
      assert.equal(events.length, 11)
      assert.equal(events[0].decision, 'BOOTSTRAP')
      const t = events.find((e) => e.modeTransition)
      assert.deepEqual(t.modeTransition, { from: 'BOOTSTRAP', to: 'OPERATIONAL' })
      assert.equal(events.at(-1).decision, 'FLOW')
    })
  })
}

describe('the reference model is the original', () => {
  test('route() allows when the voltage exceeds R, with the original reason', async () => {
    const a = new Atrion({ model: 'reference', autoTuner: false })
    for (let i = 0; i < 10; i++) a.route('r', { latencyMs: 100, errorRate: 0.01, saturation: 0.5 })
    // At baseline every pressure is 0: R = R_base = 10.
    const at = a.route('r', { latencyMs: 100, errorRate: 0.01, saturation: 0.5 }, 10)
    assert.equal(at.resistance, 10)
    assert.deepEqual(at, { allow: false, resistance: 10, mode: 'OPERATIONAL', reason: 'Insufficient voltage: V=10 ≤ R=10.0Ω' })
    assert.equal(a.route('r', { latencyMs: 100, errorRate: 0.01, saturation: 0.5 }, 10.5).allow, true)
  })

  test('sustained errors open the breaker; the original says so', async () => {
    const a = new Atrion({ model: 'reference', autoTuner: false })
    for (let i = 0; i < 10; i++) a.route('r', { latencyMs: 10 })
    let d
    for (let i = 0; i < 100 && (!d || d.allow); i++) d = a.route('r', { latencyMs: 5000, errorRate: 1 })
    assert.deepEqual([d.allow, d.mode, d.reason], [false, 'CIRCUIT_BREAKER', 'Circuit breaker open'])
    // No voltage gets through an open breaker.
    assert.equal(a.route('r', { latencyMs: 5000, errorRate: 1 }, 1e9).allow, false)
    assert.ok(a.getState('r').scarTissue > 0)
  })

  test("the original's config and SLO shape its physics", async () => {
    const a = new Atrion({
      model: 'reference',
      autoTuner: false,
      config: { baseResistance: 20, bootstrapTicks: 2 },
      slo: { baselineLatencyMs: 50, maxAcceptableLatencyMs: 200, targetErrorRate: 0.01, criticality: { latency: 8, error: 10, saturation: 5 } },
    })
    a.route('r', { latencyMs: 50, errorRate: 0.01, saturation: 0.5 })
    a.route('r', { latencyMs: 50, errorRate: 0.01, saturation: 0.5 })
    const s = a.getState('r')
    assert.equal(s.mode, 'OPERATIONAL', 'two bootstrap ticks')
    assert.equal(s.breakPoint, 200, 'break = R_base × breakMultiplier without a tuner')
    assert.equal(a.route('r', { latencyMs: 50, errorRate: 0.01, saturation: 0.5 }).resistance, 20, 'at the SLO baseline: R_base')
  })

  test('one tuner learns from every route', async () => {
    const a = new Atrion({ model: 'reference' })
    for (const r of ['a', 'b']) for (let i = 0; i < 12; i++) a.route(r, { latencyMs: 10 })
    // Two operational updates per route (the 11th and 12th): four samples in one tuner.
    assert.equal(a.getTunerStats().sampleCount, 4)
  })

  test('the tuner is warm at 50 samples, as the original', async () => {
    const a = new Atrion({ model: 'reference' })
    // The update that ends bootstrap (the 10th) teaches nothing; each later one a sample.
    for (let i = 0; i < 59; i++) a.route('r', { latencyMs: 10 })
    assert.deepEqual([a.getTunerStats().sampleCount, a.getTunerStats().isWarmedUp], [49, false])
    a.route('r', { latencyMs: 10 })
    assert.deepEqual([a.getTunerStats().sampleCount, a.getTunerStats().isWarmedUp], [50, true])
  })
})

describe('providers', () => {
  test('store URLs name their provider; bad ones are refused', () => {
    assert.equal(new StoreProvider('redis://127.0.0.1:6379').name, 'RedisProvider')
    assert.equal(new StoreProvider('postgres://u@h/db').name, 'PostgresProvider')
    assert.equal(new StoreProvider('file:./x.redb').name, 'FileProvider')
    assert.throws(() => new StoreProvider('mysql://u:secret@h'), (e) => /mysql:\/\/u:\*\*\*@h/.test(e.message) && !/secret/.test(e.message))
    assert.throws(() => new Atrion({ provider: { getVector() {} } }), /provider/)
    assert.throws(() => new Atrion({ model: 'fast' }), /model/)
  })

  test('a file store is opened by connect(); before it, route() says so', async (t) => {
    const dir = require('node:fs').mkdtempSync(require('node:path').join(require('node:os').tmpdir(), 'atrion-node-'))
    t.after(() => require('node:fs').rmSync(dir, { recursive: true, force: true }))
    const url = `file:${dir}/state.redb`
    const a = new Atrion({ provider: url, nodeId: 'n1', pulseMs: 50 })
    assert.throws(() => a.route('r', { latencyMs: 1 }), /connect\(\) first/)
    await a.connect()
    assert.equal(a.providerName, 'FileProvider')
    assert.equal(a.route('r', { latencyMs: 1 }).allow, true)
    await a.disconnect()
  })
})
