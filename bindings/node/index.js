'use strict'
// Atrion for Node.js: the engine in process, through the native addon (index.node).
//
// Two APIs over one engine:
// - the original's `Atrion` class (route(), getState(), providers, …), so that a user of
//   the original swaps one import;
// - this project's own: decide()/report(), enter() (a guard for try/finally), run().
// The answers are built here, in JavaScript, from one integer and an array the addon
// writes into: building objects across N-API costs more than the decision itself.

const { performance } = require('node:perf_hooks')
const native = require('./lib/native.js')

const { NativeAtrion, openStore } = native

/**
 * The numbers of a hot call that do not travel as arguments, both ways: the addon reads
 * latency, error rate, saturation and voltage from [3..7] and writes the rest of its answer
 * (resistance, retry-after ms or -1, throttle) into [0..3]. Writing a typed array costs
 * JavaScript next to nothing; every argument costs N-API a call.
 */
const OUT = new Float64Array(7)
const IN_LATENCY = 3
const IN_ERROR = 4
const IN_SATURATION = 5
const IN_VOLTAGE = 6
native.setAnswerArray(OUT)

/** route(slot, n), decide(slot, n, priority), report(slot, n, ok): plain N-API callbacks. */
const hot = native.hotFunctions()

/** The engine's names, in the order of its codes (one owner: the core). */
const MODES = native.modes()
const REASONS = native.reasons()
const PRIORITIES = native.priorities()

/** The original's mode names; half-open exists in the default model only. */
const ORIGINAL_MODE = {
  bootstrap: 'BOOTSTRAP',
  operational: 'OPERATIONAL',
  open: 'CIRCUIT_BREAKER',
  half_open: 'HALF_OPEN',
}
const ORIGINAL_MODES = MODES.map((m) => ORIGINAL_MODE[m])
const OPEN = MODES.indexOf('open')
const NORMAL = PRIORITIES.indexOf('normal')

/** The reasons' codes, by name. */
const REASON = Object.fromEntries(REASONS.map((r, i) => [r, i]))

/** The original's AutoTuner defaults (its `DEFAULT_AUTOTUNER_CONFIG`). */
const ORIGINAL_TUNER = {
  windowSize: 100,
  sensitivity: 3,
  minFloor: 30,
  hardCeiling: 500,
  warmupTicks: 50,
  recoveryMultiplier: 0.5,
}

// ---------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------

/** State in this process only (the original's default provider). */
class InMemoryProvider {
  /** @param {{ maxRoutes?: number }} [options] */
  constructor(options = {}) {
    this.name = 'InMemoryProvider'
    this.url = null
    this.maxRoutes = options.maxRoutes
  }
}

const STORE_NAMES = [
  ['file:', 'FileProvider'],
  ['redis://', 'RedisProvider'],
  ['rediss://', 'RedisProvider'],
  ['postgres://', 'PostgresProvider'],
  ['postgresql://', 'PostgresProvider'],
]

/**
 * One of this project's stores, by URL: `file:PATH`, `redis://…`, `rediss://…`,
 * `postgres://…`. Nodes on the same store (and namespace) share scar tissue, with each
 * other and with `atrion serve` sidecars.
 */
class StoreProvider {
  /** @param {string} url @param {{ namespace?: string }} [options] */
  constructor(url, options = {}) {
    if (typeof url !== 'string') throw new TypeError('StoreProvider: the store URL must be a string')
    const known = STORE_NAMES.find(([prefix]) => url.startsWith(prefix))
    if (!known) {
      throw new TypeError(
        `StoreProvider: expected file:PATH, redis://…, rediss://…, postgres://… or postgresql://…, not ${redact(url)}`,
      )
    }
    this.name = known[1]
    this.url = url
    this.namespace = options.namespace
  }
}

function redact(url) {
  return String(url).replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@')
}

function toProvider(p) {
  if (p === undefined || p === null || p === 'memory') return new InMemoryProvider()
  if (typeof p === 'string') return new StoreProvider(p)
  if (p instanceof InMemoryProvider || p instanceof StoreProvider) return p
  if (typeof p === 'object' && typeof p.url === 'string') return new StoreProvider(p.url, p)
  if (typeof p === 'object' && p.name === 'InMemoryProvider') return new InMemoryProvider(p)
  throw new TypeError(
    'Atrion: `provider` must be an InMemoryProvider, a StoreProvider or a store URL ' +
      '(custom JavaScript providers are not supported: the engine keeps its state natively)',
  )
}

// ---------------------------------------------------------------------------
// Options → the engine's PhysicsConfig (snake_case JSON, merged over the model's defaults)
// ---------------------------------------------------------------------------

function physicsOf(model, options) {
  const p = {}
  const c = options.config ?? {}
  const slo = options.slo
  const tuner = options.autoTuner
  if (model === 'reference') {
    // The original's PhysicsConfig and SLO, field by field (its normalize and physics).
    if (c.baseResistance !== undefined) p.r_base = c.baseResistance
    if (c.decayRate !== undefined) p.scar_decay = c.decayRate
    if (c.scarFactor !== undefined) p.scar_rate = c.scarFactor
    if (c.dampingFactor !== undefined) p.momentum_weight = c.dampingFactor
    if (c.criticalPressure !== undefined) p.critical_pressure = c.criticalPressure
    if (c.bootstrapTicks !== undefined) p.bootstrap_updates = c.bootstrapTicks
    if (c.tanhScale !== undefined) p.gain = { latency: c.tanhScale, error: c.tanhScale, saturation: c.tanhScale }
    if (slo) {
      p.baseline = { latency: slo.baselineLatencyMs, error: slo.targetErrorRate }
      if (slo.criticality) p.criticality = { ...slo.criticality }
    }
    if (tuner === false) {
      // Without a tuner the original breaks at R_base × breakMultiplier, recovers at half.
      const brk = (c.baseResistance ?? 10) * (c.breakMultiplier ?? 10)
      p.tuner = { enabled: false }
      p.static_break = brk
      p.static_recovery = brk * 0.5
    } else {
      // With one, its warm-up break is a fixed 100 Ω, whatever the config.
      const t = { ...ORIGINAL_TUNER, ...(typeof tuner === 'object' ? tuner : {}) }
      p.tuner = {
        enabled: true,
        window: t.windowSize,
        k: t.sensitivity,
        floor: t.minFloor,
        ceiling: t.hardCeiling,
        warmup_samples: t.warmupTicks,
        recovery_ratio: t.recoveryMultiplier,
        recovery_floor: t.minFloor * 0.5,
      }
      p.static_break = 100
      p.static_recovery = Math.max(t.minFloor * 0.5, 100 * t.recoveryMultiplier)
    }
  } else {
    // The default model learns each route's normal; an SLO fixes it instead.
    if (slo) {
      p.normal = { slo_ms: slo.baselineLatencyMs }
      if (slo.criticality) p.criticality = { ...slo.criticality }
    }
    if (tuner === false) p.tuner = { enabled: false }
    else if (typeof tuner === 'object') {
      p.tuner = {}
      if (tuner.sensitivity !== undefined) p.tuner.k = tuner.sensitivity
      if (tuner.minFloor !== undefined) p.tuner.floor = tuner.minFloor
      if (tuner.hardCeiling !== undefined) p.tuner.ceiling = tuner.hardCeiling
      if (tuner.warmupTicks !== undefined) p.tuner.warmup_samples = tuner.warmupTicks
      if (tuner.recoveryMultiplier !== undefined) p.tuner.recovery_ratio = tuner.recoveryMultiplier
    }
  }
  return deepMerge(p, options.physics ?? {})
}

function deepMerge(a, b) {
  const out = { ...a }
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object' ? deepMerge(out[k], v) : v
  }
  return out
}

function priorityCode(p) {
  if (p === undefined || p === null) return NORMAL
  if (typeof p === 'number' && Number.isInteger(p) && p >= 0 && p < PRIORITIES.length) return p
  const i = PRIORITIES.indexOf(String(p).toLowerCase())
  if (i < 0) throw new RangeError(`unknown priority \`${p}\`, expected ${PRIORITIES.join(', ')}`)
  return i
}

const { RETRY_ATTEMPT_HEADER, retryAttempt } = require('./lib/retry.js')

/** The largest retry number passed to the engine; any retry past the fourth is bulk already. */
const MAX_ATTEMPT = 100

/** A retry's number, checked: a whole number >= 0 (none: a first try). */
function attemptOf(a) {
  if (a === undefined || a === null) return 0
  if (typeof a !== 'number' || !Number.isInteger(a) || a < 0) {
    throw new RangeError(`attempt must be a whole number >= 0 (0 is a first try), not ${a}`)
  }
  return Math.min(a, MAX_ATTEMPT)
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

/** A shed, thrown by `run()`. */
class ShedError extends Error {
  constructor(route, decision) {
    super(`Atrion: route \`${route}\` is shed (${decision.reason}); retry in ${Math.ceil(decision.retryAfterMs ?? 0)} ms`)
    this.name = 'ShedError'
    this.route = route
    this.decision = decision
    this.retryAfterMs = decision.retryAfterMs
  }
}

/**
 * An admitted request in flight: `end()` reports its latency (since `enter`) and outcome,
 * once; `fail()` marks it failed. Use it with try/finally (or `using`, where supported).
 * A shed request's guard does nothing on `end()`.
 */
class Guard {
  constructor(atrion, route, decision) {
    this.route = route
    this.decision = decision
    this.admitted = decision.admitted
    this._atrion = atrion
    this._start = performance.now()
    this._ok = true
    this._saturation = NaN
    this._done = !decision.admitted
  }

  /** Marks the request failed. */
  fail() {
    this._ok = false
    return this
  }

  /** The route's saturation as measured by the caller, in [0, 1]. */
  saturation(value) {
    this._saturation = value
    return this
  }

  /** Reports the request (once; later calls do nothing). */
  end() {
    if (this._done) return
    this._done = true
    this._atrion.report(this.route, performance.now() - this._start, this._ok, this._saturation)
  }
}
if (typeof Symbol.dispose === 'symbol') {
  Guard.prototype[Symbol.dispose] = Guard.prototype.end
}

// ---------------------------------------------------------------------------
// Task leases
// ---------------------------------------------------------------------------

/** The original's profile names, as this project names them. */
function nativeProfile(p) {
  if (p === undefined || p === null) return undefined
  if (typeof p === 'string') return { name: p }
  if (typeof p === 'object') {
    return {
      baselineLatencyMs: p.baselineLatencyMs,
      maxDurationMs: p.maxDurationMs,
      heartbeatRequired: p.heartbeatRequired,
      heartbeatIntervalMs: p.heartbeatIntervalMs,
      scarMultiplier: p.scarMultiplier,
    }
  }
  throw new TypeError('Atrion: a profile is a name (LIGHT, STANDARD, HEAVY, EXTREME, CUSTOM) or a ProfileConfig')
}

const NEEDS_ABORT = new Set(['heavy', 'extreme'])

/** How often live leases are checked for an abort the engine swept (one timer per Atrion). */
const TASK_POLL_MS = 100

/**
 * A long-running task admitted on a route (the original's `TaskLease`): `heartbeat()` it,
 * then `release()` (or `complete(ok)`) it. The engine aborts it when it overruns or misses
 * its heartbeats: its `AbortController` is aborted, and the failure reported.
 */
class TaskLease {
  constructor(atrion, routeId, native, controller, profile) {
    this._atrion = atrion
    this._n = native
    this._controller = controller
    this.routeId = routeId
    this.profile = profile
    this.progress = 0
    this._ended = false
  }

  get id() {
    return this._n.id
  }
  get startedAt() {
    return this._n.startedAtMs
  }
  get expiresAt() {
    return this._n.expiresAtMs
  }
  /** When the next heartbeat is due at the latest (ms since the epoch), if it needs them. */
  get heartbeatBy() {
    return this._n.heartbeatByMs ?? undefined
  }
  get isActive() {
    return !this._ended && this._n.active
  }
  /** Why the engine aborted it (`max_duration`, `missed_heartbeat`, `shutdown`), if it did. */
  get abortReason() {
    return this._n.aborted() ?? undefined
  }

  /** Keeps it alive; throws once it is no longer active (the original's message). */
  heartbeat(payload) {
    if (!this.isActive) throw new Error('Cannot heartbeat: lease is no longer active')
    try {
      this._n.heartbeat()
    } catch (e) {
      this._atrion._check(this)
      throw new Error(`Cannot heartbeat: lease is no longer active (${e.message})`)
    }
    if (payload && payload.progress !== undefined) this.progress = payload.progress
  }

  /** Ends it and reports it: a success (`ok`) or a failure. Returns the outcome's name. */
  complete(ok = true) {
    if (this._ended) return undefined
    this._ended = true
    this._atrion._leases.delete(this)
    try {
      return this._n.complete(ok)
    } catch (e) {
      this._atrion._check(this)
      throw e
    }
  }

  /**
   * The original's release: `completed` (default) and `failed` end it with a report;
   * `aborted` and `timeout` end it without one (cancelled). Once ended, it does nothing.
   */
  async release(outcome = 'completed') {
    if (this._ended || !this._n.active) {
      this._ended = true
      this._atrion._leases.delete(this)
      return
    }
    if (outcome === 'completed' || outcome === 'failed') {
      try {
        this.complete(outcome === 'completed')
      } catch {
        // Aborted at this very call: the abort is fired by _check; release never throws.
      }
      return
    }
    this._ended = true
    this._atrion._leases.delete(this)
    try {
      this._n.release()
    } catch {
      // Already gone: it ended either way.
    }
  }

  remainingMs() {
    return this.isActive ? this._n.remainingMs() : 0
  }
}

// ---------------------------------------------------------------------------
// Atrion
// ---------------------------------------------------------------------------

/**
 * Atrion: per-route admission control, in process.
 *
 * Compatible with the original's class (`route`, `getState`, `getRoutes`, `getTunerStats`,
 * `resetRoute`, `connect`, `disconnect`, `providerName`, `isConnected`), with this project's
 * own API beside it (`decide`, `report`, `enter`, `run`).
 */
class Atrion {
  constructor(options = {}) {
    const model = options.model ?? 'default'
    if (model !== 'reference' && model !== 'default') {
      throw new TypeError(`Atrion: \`model\` must be 'reference' or 'default', not ${JSON.stringify(model)}`)
    }
    if (options.engine !== undefined && !['auto', 'wasm', 'ts', 'native'].includes(options.engine)) {
      throw new TypeError(`Atrion: \`engine\` must be 'auto', 'wasm', 'ts' or 'native', not ${JSON.stringify(options.engine)}`)
    }
    this.model = model
    this._provider = toProvider(options.provider)
    this._observer = options.observer
    this._defaultVoltage = options.defaultVoltage ?? 100
    this._tuner = options.autoTuner !== false
    this._nativeOptions = {
      model,
      physics: JSON.stringify(physicsOf(model, options)),
      nodeId: options.nodeId,
      namespace: options.namespace ?? this._provider.namespace,
      pulseMs: options.pulseMs,
      maxRoutes: this._provider.maxRoutes,
    }
    this._connected = false
    this._lastMode = new Map()
    this._leases = new Set()
    this._poll = null
    // This process alone: the engine exists at once (route() works before connect(), as
    // in the original). A shared store is opened by connect().
    this._n = null
    this._slot = -1
    if (!this._provider.url) this._attach(null)
  }

  _attach(store) {
    this._n = new NativeAtrion(this._nativeOptions, store)
    this._slot = this._n.slot
    // Route ids by the number the addon knows them by (bounded by the addon: past its
    // limit, ids travel as strings).
    this._ids = new Map()
    this._internFull = false
  }

  /** The number the addon knows `route` by, or the string itself. */
  _ref(route) {
    const known = this._ids.get(route)
    if (known !== undefined) return known
    if (typeof route !== 'string') throw new TypeError('Atrion: a route id must be a string')
    if (this._internFull) return route
    const i = native.intern(this._slot, route)
    if (i === null || i === undefined) {
      this._internFull = true
      return route
    }
    this._ids.set(route, i)
    return i
  }

  /** Opens the provider's store and joins the cluster (warm start, then the pulse). */
  async connect() {
    if (this._connected) return
    if (!this._n) {
      this._attach(await openStore(this._provider.url, this._nativeOptions.namespace))
    }
    await this._n.connect()
    this._connected = true
  }

  /** Pushes what this node learned and leaves the cluster. */
  async disconnect() {
    if (!this._connected) return
    await this._n.shutdown()
    this._connected = false
  }

  /** The provider's name. */
  get providerName() {
    return this._provider.name
  }

  /** Whether `connect()` has completed (and `disconnect()` not since). */
  get isConnected() {
    return this._connected
  }

  /** The engine runs natively: there is no WebAssembly (the original's `usingWasm`). */
  get usingWasm() {
    return false
  }

  _engine() {
    if (!this._n) {
      throw new Error(`Atrion: call connect() first: the ${this._provider.name} store is opened by connect()`)
    }
    return this._n
  }

  /**
   * The original's route(): learns the telemetry, then decides for a request of this
   * voltage (default `defaultVoltage`, 100).
   */
  route(routeId, telemetry, voltage) {
    const v = voltage ?? this._defaultVoltage
    if (this._slot < 0) this._engine()
    OUT[IN_LATENCY] = telemetry.latencyMs
    OUT[IN_ERROR] = telemetry.errorRate ?? 0
    OUT[IN_SATURATION] = telemetry.saturation ?? 0
    OUT[IN_VOLTAGE] = v
    const code = hot.route(this._slot, this._ref(routeId))
    const allow = (code & 1) === 1
    const resistance = OUT[0]
    const mode = ORIGINAL_MODES[(code >> 1) & 3]
    let reason = 'OK'
    if (!allow) reason = reasonText(code >> 3, mode, v, resistance)
    if (this._observer) this._notify(routeId, resistance)
    return { allow, resistance, mode, reason }
  }

  _notify(routeId, resistance) {
    const s = this.getState(routeId)
    if (!s) return
    const prev = this._lastMode.get(routeId)
    this._lastMode.set(routeId, { mode: s.mode, at: s.lastUpdatedAt })
    const p = s.pressure
    const event = {
      routeId,
      mode: s.mode,
      resistance,
      momentum: s.momentum,
      scarTissue: s.scarTissue,
      decision: s.mode === 'BOOTSTRAP' ? 'BOOTSTRAP' : s.mode === 'OPERATIONAL' ? 'FLOW' : 'SHED',
      deltaT: prev ? s.lastUpdatedAt - prev.at : 0,
      timestamp: s.lastUpdatedAt,
      pressureMagnitude: Math.hypot(p.latency, p.error, p.saturation),
      modeTransition: prev && prev.mode !== s.mode ? { from: prev.mode, to: s.mode } : undefined,
      tickCount: s.tickCount,
    }
    const observer = this._observer
    setImmediate(() => observer.onUpdate(event))
  }

  /** A route's state in the original's shape; undefined for a route that learned nothing. */
  getState(routeId) {
    const s = this._engine().state(routeId)
    if (!s) return undefined
    const mode = ORIGINAL_MODES[s.mode]
    const [latency, error, saturation] = s.pressure
    const state = {
      routeId,
      mode,
      pressure: { latency, error, saturation },
      scarTissue: s.scar,
      resistance: s.resistance,
      lastUpdatedAt: s.updatedAtMs,
      tickCount: s.updates,
      momentum: mode === 'BOOTSTRAP' ? undefined : s.momentum,
      breakPoint: s.breakPoint,
      recoveryPoint: s.recovery,
    }
    if (mode === 'CIRCUIT_BREAKER' && this.model === 'default') state.openUntil = s.openUntilMs
    return state
  }

  /** The routes that have learned something. */
  getRoutes() {
    return this._engine().routes()
  }

  /**
   * What the AutoTuner learned, or undefined when it is off. The reference model has one
   * tuner for all routes; the default model one per route: give `routeId`, or get them
   * pooled (samples summed, mean and spread of the union).
   */
  getTunerStats(routeId) {
    if (!this._tuner) return undefined
    const n = this._engine()
    if (this.model === 'reference' || routeId !== undefined) return n.tuner(routeId) ?? undefined
    let count = 0
    let sum = 0
    let sumSq = 0
    let warm = false
    for (const r of n.routes()) {
      const t = n.tuner(r)
      if (!t || t.sampleCount === 0) continue
      count += t.sampleCount
      sum += t.mean * t.sampleCount
      sumSq += (t.stdDev ** 2 + t.mean ** 2) * t.sampleCount
      warm = warm || t.isWarmedUp
    }
    const mean = count ? sum / count : 0
    return {
      mean,
      stdDev: count ? Math.sqrt(Math.max(0, sumSq / count - mean * mean)) : 0,
      sampleCount: count,
      isWarmedUp: warm,
    }
  }

  /** Forgets what a route learned. */
  async resetRoute(routeId) {
    this._engine().reset(routeId)
    this._lastMode.delete(routeId)
  }

  // --- this project's own API ---------------------------------------------------------

  /**
   * The engine's decision for a request on `route` now, at `priority` ('critical', 'high',
   * 'normal' (default), 'low', 'bulk'). `attempt` is the client's retry number (0 or none:
   * a first try): a retry is decided one tier lower per retry, so that under a retry surge
   * retries are shed before first tries; critical stays critical.
   */
  decide(route, priority, attempt) {
    if (this._slot < 0) this._engine()
    // The retry's number rides above the priority's three bits (the native side splits them).
    const code = hot.decide(this._slot, this._ref(route), priorityCode(priority) + attemptOf(attempt) * 8)
    const o = OUT
    const admitted = (code & 1) === 1
    const d = {
      admitted,
      verdict: admitted ? 'admit' : 'shed',
      reason: REASONS[code >> 3],
      mode: MODES[(code >> 1) & 3],
      resistance: o[0],
      retryAfterMs: o[1] >= 0 ? o[1] : undefined,
    }
    if (o[2] > 0) d.throttle = o[2]
    return d
  }

  /**
   * Reports how a request on `route` went: latency in ms, success, and the route's
   * saturation in [0, 1] if measured. Returns the route's mode.
   */
  report(route, latencyMs, ok = true, saturation) {
    if (this._slot < 0) this._engine()
    OUT[IN_LATENCY] = latencyMs
    OUT[IN_SATURATION] = saturation ?? NaN
    return MODES[hot.report(this._slot, this._ref(route), ok)]
  }

  /** Decides, and returns a guard whose `end()` reports (see `Guard`). */
  enter(route, priority, attempt) {
    return new Guard(this, route, this.decide(route, priority, attempt))
  }

  /**
   * Runs `fn` if `route` admits it, reporting its latency and outcome (a throw or a
   * rejected promise is a failure); throws `ShedError` when shed. `attempt`: as `decide`'s.
   */
  async run(route, fn, priority, attempt) {
    const g = this.enter(route, priority, attempt)
    if (!g.admitted) throw new ShedError(route, g.decision)
    try {
      return await fn()
    } catch (e) {
      g.fail()
      throw e
    } finally {
      g.end()
    }
  }

  // --- workload profiles and task leases (the original's RFC-0010) ---------------------

  /**
   * Sets the workload profile of a route (or of the routes a pattern ending in `*`
   * matches): `LIGHT`, `STANDARD`, `HEAVY`, `EXTREME` (any case), `CUSTOM`, or the original's
   * `ProfileConfig` object; `null` removes it. It seeds the route's latency normal and sets
   * its leases' defaults.
   */
  setRouteProfile(routeId, profile) {
    this._engine().setRouteProfile(routeId, profile == null ? null : nativeProfile(profile))
  }

  async startTask(routeId, options = {}) {
    const profile = options.profile
    const name = typeof profile === 'string' ? profile.toLowerCase() : profile ? 'custom' : undefined
    if (name && NEEDS_ABORT.has(name) && !options.abortController) {
      throw new Error(
        `AbortController is required for ${String(profile).toUpperCase()} profile. Long-running tasks must be terminable.`,
      )
    }
    const r = this._engine().startTask(routeId, {
      profile: nativeProfile(profile),
      maxDurationMs: options.maxDurationMs ?? options.timeout,
      heartbeatMs: options.heartbeatMs,
      priority: options.priority === undefined ? undefined : priorityCode(options.priority),
      abortable: Boolean(options.abortController),
    })
    if (!(r instanceof native.NativeLease)) {
      throw new ShedError(routeId, {
        admitted: false, verdict: 'shed', reason: REASONS[r.code >> 3], mode: MODES[(r.code >> 1) & 3],
        resistance: r.resistance, retryAfterMs: r.retryAfterMs,
      })
    }
    const shown = typeof profile === 'string' ? profile.toUpperCase() : profile ? 'CUSTOM' : r.profile.toUpperCase()
    const lease = new TaskLease(this, routeId, r, options.abortController, shown)
    this._leases.add(lease)
    if (!this._poll) {
      this._poll = setInterval(() => this._sweep(), TASK_POLL_MS)
      this._poll.unref()
    }
    return lease
  }

  getActiveTaskCount(routeId) {
    return this._engine().activeTasks(routeId)
  }

  _sweep() {
    if (this._n) this._n.sweepTasks()
    for (const lease of this._leases) this._check(lease)
    if (this._leases.size === 0 && this._poll) {
      clearInterval(this._poll)
      this._poll = null
    }
  }

  _check(lease) {
    const reason = lease._n.aborted()
    if (reason) {
      this._leases.delete(lease)
      lease._ended = true
      if (lease._controller && !lease._controller.signal.aborted) {
        const e = new Error(`Atrion: task lease ${lease.id} on ${lease.routeId} aborted: ${reason}`)
        e.name = 'AbortError'
        e.reason = reason
        lease._controller.abort(e)
      }
    } else if (!lease._n.active) {
      this._leases.delete(lease)
    }
  }

  /**
   * Sets this project's physics (snake_case PhysicsConfig fields, merged over the engine's
   * config) for the routes `pattern` matches: an exact id, or a prefix ending in `*`.
   * `null` removes it.
   */
  setRouteConfig(pattern, physics) {
    this._engine().setRouteConfig(pattern, physics == null ? null : JSON.stringify(physics))
  }
}

function reasonText(reasonCode, mode, voltage, resistance) {
  switch (reasonCode) {
    case REASON.open:
    case REASON.probe_quota:
      return 'Circuit breaker open'
    case REASON.throttled:
      return 'Throttled: shedding part of the traffic while latency is over its normal'
    case REASON.held:
      return 'Held open by an operator'
    default:
      if (mode === 'CIRCUIT_BREAKER') return 'Circuit breaker open'
      return `Insufficient voltage: V=${voltage} ≤ R=${resistance.toFixed(1)}Ω`
  }
}

exports.Atrion = Atrion
exports.InMemoryProvider = InMemoryProvider
exports.StoreProvider = StoreProvider
exports.Guard = Guard
exports.ShedError = ShedError
exports.TaskLease = TaskLease
exports.MODES = MODES
exports.REASONS = REASONS
exports.PRIORITIES = PRIORITIES
exports.shedProblem = shedProblem
exports.RETRY_ATTEMPT_HEADER = RETRY_ATTEMPT_HEADER
exports.retryAttempt = retryAttempt

/**
 * The RFC 9457 problem a shed request is answered with (the sidecar's `shed` problem), and
 * its `Retry-After` in whole seconds.
 */
function shedProblem(route, decision) {
  const ms = Math.max(1, Math.ceil(decision.retryAfterMs ?? 1000))
  const seconds = Math.max(1, Math.ceil(ms / 1000))
  return {
    retryAfter: seconds,
    body: {
      type: 'tag:atrion,2026:problem/shed',
      title: 'The route is shed',
      status: 503,
      detail: `the route \`${route}\` is shed (${decision.reason}); retry in ${seconds} s`,
      route,
      reason: decision.reason,
      retry_after_ms: ms,
    },
  }
}

// The framework adapters (neither framework is a dependency: they take what they are given).
exports.express = require('./lib/express.js').express
exports.fastify = require('./lib/fastify.js').fastify
