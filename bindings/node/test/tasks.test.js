'use strict'
// Task leases (the original's startTask, getActiveTaskCount, setRouteProfile): a lease that
// completes is reported as a success; one that overruns its duration, or misses its
// heartbeats, is aborted (its AbortController fired), reported as a failure and removed;
// one released without completing is cancelled (nothing reported).

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { Atrion, TaskLease, ShedError } = require('..')
const { eventually, FAST_SCAR, trip } = require('./helpers.js')

function aborted(controller) {
  return eventually('the task is aborted', () => controller.signal.aborted)
}

test('a lease that completes counts while it runs and reports a success', async () => {
  const a = new Atrion()
  const lease = await a.startTask('reports/build', { profile: 'STANDARD' })
  assert.ok(lease instanceof TaskLease)
  assert.equal(lease.profile, 'STANDARD')
  assert.equal(lease.routeId, 'reports/build')
  assert.equal(lease.isActive, true)
  assert.equal(a.getActiveTaskCount('reports/build'), 1)
  assert.equal(lease.expiresAt - lease.startedAt, 30_000, "the standard profile's 30 s")
  assert.ok(lease.remainingMs() > 0)
  lease.heartbeat({ progress: 0.5 })
  assert.equal(lease.progress, 0.5)
  await lease.release()
  assert.equal(lease.isActive, false)
  assert.equal(a.getActiveTaskCount('reports/build'), 0)
  const s = a.getState('reports/build')
  assert.equal(s.tickCount, 1, 'one sample: the task')
  assert.equal(s.pressure.error, -1 * Math.abs(s.pressure.error), 'a success')
  assert.throws(() => lease.heartbeat(), /no longer active/)
  await lease.release() // ended: nothing happens
})

test('a lease that overruns its duration is aborted, reported as a failure and removed', async () => {
  const a = new Atrion()
  const controller = new AbortController()
  const lease = await a.startTask('ml/train', { profile: 'HEAVY', abortController: controller, timeout: 100 })
  assert.equal(a.getActiveTaskCount('ml/train'), 1)
  await aborted(controller)
  assert.equal(controller.signal.reason.name, 'AbortError')
  assert.equal(lease.abortReason, 'max_duration')
  assert.equal(lease.isActive, false)
  assert.equal(a.getActiveTaskCount('ml/train'), 0)
  const s = a.getState('ml/train')
  assert.equal(s.tickCount, 1)
  assert.ok(s.pressure.error > 0, 'a failure')
  assert.throws(() => lease.heartbeat(), /no longer active/)
})

test('a lease that misses its heartbeats is aborted', async () => {
  const a = new Atrion()
  const controller = new AbortController()
  const profile = { baselineLatencyMs: 100, maxDurationMs: 600_000, heartbeatRequired: true, heartbeatIntervalMs: 30, scarMultiplier: 1 }
  const lease = await a.startTask('etl/nightly', { profile, abortController: controller })
  assert.equal(lease.profile, 'CUSTOM')
  assert.ok(lease.heartbeatBy <= lease.startedAt + 90 + 1, 'three intervals to the first heartbeat')
  await aborted(controller)
  assert.equal(lease.abortReason, 'missed_heartbeat')
  assert.equal(a.getActiveTaskCount('etl/nightly'), 0)
})

test('heavy work needs an abort controller; a cancelled lease reports nothing', async () => {
  const a = new Atrion()
  await assert.rejects(
    a.startTask('video/encode', { profile: 'HEAVY' }),
    /AbortController is required for HEAVY profile\. Long-running tasks must be terminable\./,
  )
  const lease = await a.startTask('video/encode', { profile: 'LIGHT' })
  await lease.release('aborted')
  assert.equal(a.getActiveTaskCount('video/encode'), 0)
  assert.equal(a.getState('video/encode'), undefined, 'cancelled: not a sample')
})

test("a route's profile sets its leases' defaults", async () => {
  const a = new Atrion()
  a.setRouteProfile('genom/*', 'EXTREME')
  await assert.rejects(a.startTask('genom/sequence', {}), /abort/)
  const lease = await a.startTask('genom/sequence', { abortController: new AbortController() })
  assert.equal(lease.profile, 'EXTREME')
  assert.equal(lease.expiresAt - lease.startedAt, 3_600_000, "the extreme profile's hour")
  await lease.release('failed')
  assert.ok(a.getState('genom/sequence').pressure.error > 0)
  a.setRouteProfile('genom/*', null)
  assert.throws(() => a.setRouteProfile('x', 'GIGANTIC'), /profile/)
})

test('a task on a route that sheds is refused with the decision', async () => {
  const a = new Atrion({ physics: FAST_SCAR })
  await trip(a, 'jobs/flaky')
  await assert.rejects(a.startTask('jobs/flaky', { profile: 'LIGHT' }), (e) => e instanceof ShedError && e.retryAfterMs > 0)
  assert.equal(a.getActiveTaskCount('jobs/flaky'), 0)
})
