'use strict'
// Retries: `decide(route, priority, attempt)` and the `X-Retry-Attempt` header read by the
// Express middleware and the Fastify plugin decide a retry one priority tier lower per
// retry, so that retries are shed before first tries (critical stays critical).

const { test } = require('node:test')
const assert = require('node:assert/strict')
const expressLib = require('express')
const fastifyLib = require('fastify')
const { Atrion, RETRY_ATTEMPT_HEADER, retryAttempt, express, fastify } = require('..')

/**
 * An engine whose `low` tier sheds nearly anything over R_base while `normal` admits up to the
 * break point, with no keep-alive request slipping through during a test, and `route` a
 * little over R_base: a first try at `normal` is admitted, a retry (decided at `low`) shed.
 */
function between(route) {
  const a = new Atrion({ physics: { priority: { bulk: 0.01, low: 0.01, normal: 1, high: 1 }, keepalive: 3600 } })
  a.report(route, 5, false) // one failure: resistance a little over R_base, far under the break point
  a.decide(route, 'low') // the keep-alive's one request, if it has one: taken now
  const low = a.decide(route, 'low')
  assert.equal(low.reason, 'overloaded', JSON.stringify(low))
  assert.equal(a.decide(route, 'normal').admitted, true)
  return a
}

test('the header is x-retry-attempt; a malformed value is a first try', () => {
  assert.equal(RETRY_ATTEMPT_HEADER, 'x-retry-attempt')
  assert.equal(retryAttempt({ 'x-retry-attempt': ' 2 ' }), 2)
  assert.equal(retryAttempt({ 'x-retry-attempt': ['3', '1'] }), 3)
  for (const v of ['', 'two', '-1', '1.5', '99999999999']) assert.equal(retryAttempt({ 'x-retry-attempt': v }), 0, v)
  assert.equal(retryAttempt({}), 0)
  assert.equal(retryAttempt(undefined), 0)
})

test('decide: a retry is decided a tier lower per retry, critical stays', () => {
  const a = between('GET /r')
  assert.equal(a.decide('GET /r', 'normal', 1).admitted, false)
  assert.equal(a.decide('GET /r', 'normal', 1).reason, 'overloaded')
  assert.equal(a.decide('GET /r', 'high', 2).admitted, false) // high, two tiers lower: low
  assert.equal(a.decide('GET /r', 'high', 1).admitted, true) // high, one tier lower: normal
  assert.equal(a.decide('GET /r', 'normal', 0).admitted, true)
  assert.equal(a.decide('GET /r', 'normal').admitted, true)
  assert.equal(a.decide('GET /r', 'critical', 100).admitted, true)
  assert.equal(a.decide('GET /r', 'normal', 1e9).admitted, false) // any number past the last tier: bulk
  for (const bad of [-1, 1.5, Number.NaN, '1']) {
    assert.throws(() => a.decide('GET /r', 'normal', bad), (e) => e instanceof RangeError && /attempt/.test(e.message), String(bad))
  }
})

test('Express: a request with X-Retry-Attempt is shed where its first try is admitted', async (t) => {
  const a = between('GET /x')
  const app = expressLib()
  app.use(express(a))
  let served = 0
  app.get('/x', (req, res) => {
    served++
    res.send('x')
  })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.after(() => server.close())
  const url = `http://127.0.0.1:${server.address().port}/x`
  const retry = await fetch(url, { headers: { 'X-Retry-Attempt': '1' } })
  assert.equal(retry.status, 503)
  assert.equal(served, 0)
  const garbage = await fetch(url, { headers: { 'X-Retry-Attempt': 'soon' } })
  assert.equal(garbage.status, 200) // not a number: a first try
  const first = await fetch(url)
  assert.equal(first.status, 200)
  assert.equal(served, 2)
})

test('Fastify: a request with X-Retry-Attempt is shed where its first try is admitted', async (t) => {
  const a = between('GET /x')
  const app = fastifyLib()
  app.register(fastify(a))
  let served = 0
  app.get('/x', async () => {
    served++
    return 'x'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.after(() => app.close())
  const url = `http://127.0.0.1:${app.server.address().port}/x`
  const retry = await fetch(url, { headers: { 'X-Retry-Attempt': '2' } })
  assert.equal(retry.status, 503)
  assert.equal(served, 0)
  const first = await fetch(url)
  assert.equal(first.status, 200)
  assert.equal(served, 1)
})
