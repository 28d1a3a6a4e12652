'use strict'
// What the tests share: waiting for an event with a deadline (never a wall-clock
// assertion), a failing route made to trip, free ports.

const net = require('node:net')
const { setTimeout: sleep } = require('node:timers/promises')

/** Polls `f` until it returns a value other than undefined/false; fails after 60 s. */
async function eventually(what, f, { every = 20, deadline = 60_000 } = {}) {
  const until = Date.now() + deadline
  let last
  for (;;) {
    try {
      const v = await f()
      if (v !== undefined && v !== false) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > until) throw new Error(`not within ${deadline / 1000} s: ${what}${last ? ` (last error: ${last.message})` : ''}`)
    await sleep(every)
  }
}

/** Physics that scars within milliseconds, so that a test can make a route trip quickly. */
const FAST_SCAR = { scar_rate: 2000, smoothing: 0.005 }

/** Reports failures on `route` (after a healthy bootstrap) until it trips: open, shedding. */
async function trip(atrion, route) {
  for (let i = 0; i < 12; i++) atrion.report(route, 5, true)
  return eventually(`${route} trips`, () => {
    atrion.report(route, 5, false)
    const d = atrion.decide(route)
    return !d.admitted && d.mode === 'open' && d
  }, { every: 2 })
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

module.exports = { eventually, FAST_SCAR, trip, freePort, sleep }
