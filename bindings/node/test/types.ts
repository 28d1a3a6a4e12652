// Compiled by scripts/test.sh with tsc --strict (not run): the types fit a user's code.
import { Atrion, InMemoryProvider, StoreProvider, express, fastify, type Decision, type RouteDecision } from '../index.js'

async function use(): Promise<void> {
  const a = new Atrion({ provider: new InMemoryProvider(), autoTuner: false, model: 'reference', defaultVoltage: 50 })
  await a.connect()
  const d: RouteDecision = a.route('x', { latencyMs: 3, errorRate: 0 }, 50)
  const allow: boolean = d.allow
  const full: Decision = a.decide('x', 'high')
  const retry: number | undefined = full.retryAfterMs
  const g = a.enter('x')
  try {
    if (!g.admitted) return
  } catch (e) {
    g.fail()
    throw e
  } finally {
    g.end()
  }
  const n: number = await a.run('x', async () => 1, 'bulk')
  a.setRouteProfile('genom/*', 'EXTREME')
  const lease = await a.startTask('ml/train', { profile: 'HEAVY', abortController: new AbortController(), timeout: 1000 })
  lease.heartbeat({ progress: 0.1 })
  await lease.release('completed')
  const active: number = a.getActiveTaskCount('ml/train')
  void active
  const b = new Atrion({ provider: new StoreProvider('redis://127.0.0.1:6379', { namespace: 'x' }), pulseMs: 100 })
  const mw = express(a, { priority: (req: { headers: Record<string, string> }) => (req.headers['x-vip'] ? 'critical' : undefined) })
  const plugin = fastify(a)
  void [allow, retry, n, b, mw, plugin]
  await a.disconnect()
}
void use
