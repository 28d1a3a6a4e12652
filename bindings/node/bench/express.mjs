// The Express middleware's cost per request: decide + report through it, beside the same
// app without it, over loopback HTTP in one process (client and server share the one
// thread, so the difference in time per request is the middleware's CPU per request).
// Not a test: it prints figures.
//
//   node bench/express.mjs
//
// REQUESTS (per round, default 20000), CONCURRENCY (default 16), ROUNDS (default 5). A
// second bare app is measured as a control: its difference from the first is the noise.
// The middleware's own work is also timed without HTTP (fake request and response), which
// is what the per-request overhead is made of.
import { createRequire } from 'node:module'
import http from 'node:http'

const require = createRequire(import.meta.url)
const expressLib = require('express')
const { Atrion, express } = require('../index.js')

const REQUESTS = Number(process.env.REQUESTS ?? 20_000)
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16)
const ROUNDS = Number(process.env.ROUNDS ?? 5)

function app(kind) {
  const a = expressLib()
  a.set('etag', false)
  a.set('x-powered-by', false)
  const handler = (req, res) => res.send('ok')
  if (kind === 'app') a.use(express(new Atrion()))
  if (kind === 'route') a.get('/users/:id', express(new Atrion()), handler)
  else a.get('/users/:id', handler)
  return new Promise((resolve) => {
    const s = a.listen(0, '127.0.0.1', () => resolve(s))
  })
}

function round(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  let sent = 0
  const one = () =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: `/users/${sent % 1000}`, agent }, (res) => {
        res.resume()
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))))
      })
      req.on('error', reject)
    })
  const worker = async () => {
    while (sent < REQUESTS) {
      sent++
      await one()
    }
  }
  const t0 = process.hrtime.bigint()
  return Promise.all(Array.from({ length: CONCURRENCY }, worker)).then(() => {
    agent.destroy()
    return Number(process.hrtime.bigint() - t0) / 1e3 / REQUESTS
  })
}

const kinds = ['bare', 'app', 'route', 'control']
const servers = Object.fromEntries(await Promise.all(kinds.map(async (k) => [k, await app(k)])))
const times = Object.fromEntries(kinds.map((k) => [k, []]))
for (const k of kinds) await round(servers[k].address().port) // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (const k of kinds) times[k].push(await round(servers[k].address().port))
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
console.log(`node ${process.version}, express ${require('express/package.json').version}: ${REQUESTS} requests x ${ROUNDS} rounds, ${CONCURRENCY} at a time, one process`)
const bare = median(times.bare)
for (const k of kinds) {
  const m = median(times[k])
  const label = {
    bare: 'bare Express handler',
    app: 'app.use(express(atrion))',
    route: 'on the route',
    control: 'bare again (the noise)',
  }[k]
  console.log(`${label.padEnd(28)} ${m.toFixed(2).padStart(7)} µs/request  (${(1e6 / m).toFixed(0)} req/s)${k === 'bare' ? '' : `  overhead ${(m - bare).toFixed(2)} µs`}`)
}
for (const s of Object.values(servers)) s.close()

// Without HTTP: the middleware alone, on a fake request and response (route matching on
// the app's router, decide, two listeners, the report at 'finish').
const { EventEmitter } = await import('node:events')
const bareApp = expressLib()
const mw = express(new Atrion())
bareApp.use(mw)
bareApp.get('/users/:id', (req, res) => res.send('ok'))
const onRoute = express(new Atrion())
function perCall(f, n = 200_000) {
  for (let i = 0; i < 20_000; i++) f(i)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) f(i)
  return Number(process.hrtime.bigint() - t0) / n / 1e3
}
const fake = (use, withRoute) => (i) => {
  const res = new EventEmitter()
  res.statusCode = 200
  const req = { method: 'GET', path: `/users/${i % 1000}`, baseUrl: '', app: bareApp }
  if (withRoute) req.route = { path: '/users/:id' }
  use(req, res, () => {})
  res.emit('finish')
}
const emitterOnly = perCall(() => {
  const res = new EventEmitter()
  res.once('finish', () => {})
  res.once('close', () => {})
  res.emit('finish')
})
console.log(`\nwithout HTTP: app.use ${perCall(fake(mw, false)).toFixed(2)} µs, on the route ${perCall(fake(onRoute, true)).toFixed(2)} µs per request (of which a fake response's two listeners ${emitterOnly.toFixed(2)} µs)`)
