// The package imported as an ES module, as the original's users import it: named exports.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Atrion, InMemoryProvider, StoreProvider, express, fastify, shedProblem } from '../index.js'

test('named ES module imports', async () => {
  const a = new Atrion({ provider: new InMemoryProvider() })
  await a.connect()
  assert.equal(a.route('api/test', { latencyMs: 10 }).allow, true)
  for (const f of [StoreProvider, express, fastify, shedProblem]) assert.equal(typeof f, 'function')
  await a.disconnect()
})
