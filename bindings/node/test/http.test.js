'use strict'
// The Express middleware and the Fastify plugin, on real servers over real HTTP: the route
// is the matched pattern, the latency runs to the end of the response, a 5xx is a failure,
// and a shed is a 503 with Retry-After and a problem body, the handler never called.

const { test, describe, before, after } = require('node:test')
const assert = require('node:assert/strict')
const expressLib = require('express')
const fastifyLib = require('fastify')
const { Atrion, express, fastify } = require('..')
const { FAST_SCAR, trip, sleep, eventually } = require('./helpers.js')

/** A real engine whose reports are also written down, to see what the adapters send. */
function recorded() {
  const atrion = new Atrion({ physics: FAST_SCAR })
  const reports = []
  const report = atrion.report.bind(atrion)
  atrion.report = (route, latencyMs, ok, saturation) => {
    reports.push({ route, latencyMs, ok })
    return report(route, latencyMs, ok, saturation)
  }
  return { atrion, reports }
}

async function shedAnswer(url) {
  const r = await fetch(url)
  return { status: r.status, retryAfter: r.headers.get('retry-after'), type: r.headers.get('content-type'), body: await r.json() }
}

function checkShed(a, route) {
  assert.equal(a.status, 503)
  assert.match(a.retryAfter, /^[1-9][0-9]*$/)
  assert.match(a.type, /^application\/problem\+json/)
  assert.equal(a.body.type, 'tag:atrion,2026:problem/shed')
  assert.equal(a.body.status, 503)
  assert.equal(a.body.route, route)
  assert.ok(a.body.retry_after_ms >= 1)
}

describe('Express', () => {
  const { atrion, reports } = recorded()
  let server
  let base
  let served = 0
  before(async () => {
    const app = expressLib()
    app.use(express(atrion))
    app.get('/users/:id', (req, res) => {
      served++
      res.send(`user ${req.params.id}`)
    })
    app.get('/slow', (req, res) => {
      res.write('first ')
      setTimeout(() => res.end('last'), 50)
    })
    app.get('/fail', (req, res) => res.status(500).send('no'))
    const router = expressLib.Router()
    router.get('/items/:item', (req, res) => res.send('item'))
    app.use('/api', router)
    // On a route itself, the middleware finds Express's match already made.
    const direct = expressLib()
    direct.get('/direct/:x', express(atrion), (req, res) => res.send('direct'))
    app.use(direct)
    await new Promise((resolve) => {
      server = app.listen(0, '127.0.0.1', resolve)
    })
    base = `http://127.0.0.1:${server.address().port}`
  })
  after(() => server.close())

  test('decides and reports on the matched pattern, not the path', async () => {
    for (const path of ['/users/1', '/users/2', '/api/items/7', '/direct/9']) {
      const r = await fetch(base + path)
      assert.equal(r.status, 200, path)
      await r.text()
    }
    // `finish` follows the last byte: the reports come when the responses are done.
    await eventually('four reports', () => reports.length >= 4)
    const routes = reports.map((r) => r.route)
    assert.deepEqual(routes.filter((r) => r === 'GET /users/:id').length, 2)
    assert.ok(routes.includes('GET /api/items/:item'), routes.join())
    assert.equal(routes.filter((r) => r === 'GET /direct/:x').length, 1, 'decided once, on the app and on the route')
    assert.ok(!atrion.getRoutes().some((r) => /\/users\/\d/.test(r)), atrion.getRoutes().join())
  })

  test('the latency runs to the end of the response; a 5xx is a failure; a 404 is not decided', async () => {
    reports.length = 0
    await (await fetch(`${base}/slow`)).text()
    await (await fetch(`${base}/fail`)).text()
    const missing = await fetch(`${base}/nowhere`)
    assert.equal(missing.status, 404)
    await missing.text()
    await eventually('two reports', () => reports.length >= 2)
    const slow = reports.find((r) => r.route === 'GET /slow')
    assert.ok(slow.latencyMs >= 40, `measured to the end, not to the handler's return: ${slow.latencyMs}`)
    assert.equal(slow.ok, true)
    assert.equal(reports.find((r) => r.route === 'GET /fail').ok, false)
    assert.equal(reports.length, 2, JSON.stringify(reports))
  })

  test('a shed route answers 503 with Retry-After and a problem, the handler not called', async () => {
    await trip(atrion, 'GET /users/:id')
    const before = served
    checkShed(await shedAnswer(`${base}/users/3`), 'GET /users/:id')
    assert.equal(served, before)
    // Other routes are not touched.
    assert.equal((await fetch(`${base}/api/items/1`)).status, 200)
  })
})

describe('Fastify', () => {
  const { atrion, reports } = recorded()
  const app = fastifyLib()
  let base
  let served = 0
  before(async () => {
    await app.register(fastify(atrion))
    app.get('/users/:id', async (req) => {
      served++
      return { id: req.params.id }
    })
    app.get('/slow', async () => {
      await sleep(50)
      return 'done'
    })
    app.get('/fail', async (req, reply) => reply.code(503).send('down'))
    await app.listen({ port: 0, host: '127.0.0.1' })
    base = `http://127.0.0.1:${app.server.address().port}`
  })
  after(() => app.close())

  test('decides and reports on routeOptions.url', async () => {
    for (const id of [1, 2]) assert.equal((await fetch(`${base}/users/${id}`)).status, 200)
    await eventually('two reports', () => reports.filter((r) => r.route === 'GET /users/:id').length >= 2)
    assert.equal(reports.filter((r) => r.route === 'GET /users/:id').length, 2)
    assert.ok(!atrion.getRoutes().some((r) => /\/users\/\d/.test(r)))
  })

  test('the latency runs to the response; a 5xx is a failure; a 404 is not decided', async () => {
    reports.length = 0
    await (await fetch(`${base}/slow`)).text()
    await (await fetch(`${base}/fail`)).text()
    assert.equal((await fetch(`${base}/nowhere`)).status, 404)
    await eventually('two reports', () => reports.length >= 2)
    const slow = reports.find((r) => r.route === 'GET /slow')
    assert.ok(slow.latencyMs >= 40, String(slow.latencyMs))
    assert.equal(reports.find((r) => r.route === 'GET /fail').ok, false)
    assert.equal(reports.length, 2, JSON.stringify(reports))
  })

  test('a shed route answers 503 with Retry-After and a problem, the handler not called', async () => {
    await trip(atrion, 'GET /users/:id')
    const before = served
    checkShed(await shedAnswer(`${base}/users/3`), 'GET /users/:id')
    assert.equal(served, before)
  })
})
