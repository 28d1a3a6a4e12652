'use strict'
// A Node process and an `atrion serve` sidecar on one Redis share scar tissue: a route that
// fails in the Node process is shed by the sidecar, which never saw it fail.
//
// It starts its own redis-server on a free loopback port and the workspace's `atrion`
// binary (ATRION_BIN, else target/{debug,release}/atrion under CARGO_TARGET_DIR or the
// workspace; scripts/test.sh builds it). Without redis-server it fails, unless
// ATRION_SKIP_SERVICES=1 is set by hand, and then says why it skips.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const { Atrion, StoreProvider } = require('..')
const { eventually, FAST_SCAR, freePort } = require('./helpers.js')

const root = path.resolve(__dirname, '..', '..', '..')

function onPath(program) {
  return spawnSync('sh', ['-c', `command -v ${program}`]).status === 0
}

function atrionBin() {
  if (process.env.ATRION_BIN) return process.env.ATRION_BIN
  const target = process.env.CARGO_TARGET_DIR || path.join(root, 'target')
  const found = ['debug', 'release'].map((p) => path.join(target, p, 'atrion')).filter((f) => fs.existsSync(f))
  found.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)
  if (!found.length) throw new Error(`no atrion binary under ${target}: build it (cargo build -p atrion-cli) or set ATRION_BIN`)
  return found[0]
}

function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

function start(t, program, args) {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d) => {
    err = (err + d).slice(-4000)
  })
  t.after(() => child.kill('SIGKILL'))
  child.stderrTail = () => err
  return child
}

async function post(url, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: r.status, body: await r.json() }
}

test('a failure seen by the Node process is shed by the sidecar, through Redis', async (t) => {
  if (!onPath('redis-server')) {
    if (process.env.ATRION_SKIP_SERVICES === '1') {
      t.skip('redis-server not found and ATRION_SKIP_SERVICES=1')
      return
    }
    throw new Error('redis-server not found on PATH: install it (scripts/test does) or set ATRION_SKIP_SERVICES=1')
  }
  const redisPort = await freePort()
  const redis = start(t, 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'])
  await eventually(`redis-server listens on ${redisPort} (${redis.stderrTail()})`, () => listening(redisPort))
  const url = `redis://127.0.0.1:${redisPort}`

  const apiPort = await freePort()
  const sidecar = start(t, atrionBin(), [
    'serve', '--store', url, '--namespace', 'node-cluster', '--node-id', 'sidecar',
    '--listen', `127.0.0.1:${apiPort}`, '--no-dashboard', '--log-format', 'text',
  ])
  const api = `http://127.0.0.1:${apiPort}`
  await eventually(`the sidecar answers (${sidecar.stderrTail()})`, async () => (await fetch(`${api}/healthz`)).ok)

  const route = 'GET /pay'
  // The sidecar knows the route as healthy: past its bootstrap, it decides on physics.
  for (let i = 0; i < 12; i++) {
    const r = await post(`${api}/v1/report`, { route, latency_ms: 5, ok: true })
    assert.equal(r.status, 200, JSON.stringify(r.body))
  }
  assert.equal((await post(`${api}/v1/decide`, { route })).body.verdict, 'admit')

  const node = new Atrion({
    provider: new StoreProvider(url, { namespace: 'node-cluster' }),
    nodeId: 'node-js',
    pulseMs: 100,
    physics: FAST_SCAR,
  })
  await node.connect()
  t.after(() => node.disconnect())
  assert.equal(node.providerName, 'RedisProvider')
  for (let i = 0; i < 12; i++) node.report(route, 5, true)

  // The route fails here, and only here, until the sidecar sheds it.
  const shed = await eventually('the sidecar sheds the route that fails in Node', async () => {
    for (let i = 0; i < 5; i++) node.report(route, 5, false)
    const d = await post(`${api}/v1/decide`, { route })
    return d.body.verdict === 'shed' && d.body
  })
  assert.ok(['overloaded', 'open', 'soft_limit'].includes(shed.reason), JSON.stringify(shed))
  assert.ok(shed.retry_after_ms >= 1)
  const view = await (await fetch(`${api}/v1/routes/${encodeURIComponent(route)}`)).json()
  assert.ok(view.cluster_scar > 0, JSON.stringify(view))
  assert.ok(JSON.stringify(view.nodes).includes('node-js'), `the sidecar names the Node process: ${JSON.stringify(view.nodes)}`)
})
