// Types of atrion-node: Atrion for Node.js, in process.

// ---------------------------------------------------------------------------
// The original's types (cluster-127/atrion v2.0), as this package answers them
// ---------------------------------------------------------------------------

/** Raw telemetry from service instrumentation. */
export interface Telemetry {
  /** Response latency in milliseconds. */
  latencyMs: number
  /** Error rate [0, 1]. */
  errorRate?: number
  /** Resource saturation [0, 1]. */
  saturation?: number
}

/** A route's mode in the original's names; `HALF_OPEN` only under the default model. */
export type OperationalMode = 'BOOTSTRAP' | 'OPERATIONAL' | 'CIRCUIT_BREAKER' | 'HALF_OPEN'

/** The answer of `route()`. */
export interface RouteDecision {
  /** Whether the request should proceed. */
  readonly allow: boolean
  /** Current resistance (ohms). */
  readonly resistance: number
  /** Current mode. */
  readonly mode: OperationalMode
  /**
   * `OK`, `Circuit breaker open` or `Insufficient voltage: V=… ≤ R=…Ω` (the original's);
   * under the default model also `Throttled: …` and `Held open by an operator`.
   */
  readonly reason: string
}

/** Pressure per channel, each in [-1, 1]. */
export interface PressureVector {
  readonly latency: number
  readonly error: number
  readonly saturation: number
}

/** A route's state in the original's shape. */
export interface RouteState {
  readonly routeId: string
  readonly mode: OperationalMode
  readonly pressure: PressureVector
  readonly scarTissue: number
  readonly resistance: number
  /** The last update, in milliseconds since the Unix epoch. */
  readonly lastUpdatedAt: number
  /** Telemetry updates absorbed. */
  readonly tickCount: number
  /** Undefined in bootstrap. */
  readonly momentum: number | undefined
  /** The break point (ohms): open at or above it. */
  readonly breakPoint: number
  /** The recovery point (ohms). */
  readonly recoveryPoint: number
  /** Default model, while open: when the open interval ends (ms since the Unix epoch). */
  readonly openUntil?: number
}

/** The original's physics constants; they shape the reference model. */
export interface PhysicsConfig {
  baseResistance: number
  decayRate: number
  scarFactor: number
  dampingFactor: number
  criticalPressure: number
  breakMultiplier: number
  bootstrapTicks: number
  /** Accepted and unused, as in the original's route(). */
  minDeltaT: number
  tanhScale: number
}

/** Service level objectives. */
export interface SLOConfig {
  readonly baselineLatencyMs: number
  readonly maxAcceptableLatencyMs: number
  readonly targetErrorRate: number
  readonly criticality: {
    readonly latency: number
    readonly error: number
    readonly saturation: number
  }
}

/** The original's AutoTuner settings. */
export interface AutoTunerConfig {
  windowSize: number
  sensitivity: number
  minFloor: number
  hardCeiling: number
  warmupTicks: number
  recoveryMultiplier: number
}

/** What the AutoTuner learned. */
export interface TunerStats {
  mean: number
  stdDev: number
  sampleCount: number
  isWarmedUp: boolean
}

/** An update, as the original's observers receive it (after route(), on setImmediate). */
export interface PhysicsEvent {
  readonly routeId: string
  readonly mode: OperationalMode
  readonly resistance: number
  readonly momentum: number | undefined
  readonly scarTissue: number
  readonly decision: 'FLOW' | 'SHED' | 'BOOTSTRAP'
  readonly deltaT: number
  readonly timestamp: number
  readonly pressureMagnitude: number
  readonly modeTransition?: { readonly from: OperationalMode; readonly to: OperationalMode }
  readonly tickCount: number
}

export interface PhysicsObserver {
  onUpdate(event: PhysicsEvent): void
}

// ---------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------

/** State in this process only. */
export declare class InMemoryProvider {
  constructor(options?: { maxRoutes?: number })
  readonly name: 'InMemoryProvider'
  readonly url: null
  readonly maxRoutes?: number
}

/** One of this project's stores by URL: `file:PATH`, `redis://…`, `rediss://…`, `postgres://…`. */
export declare class StoreProvider {
  constructor(url: string, options?: { namespace?: string })
  readonly name: 'FileProvider' | 'RedisProvider' | 'PostgresProvider'
  readonly url: string
  readonly namespace?: string
}

export type Provider = InMemoryProvider | StoreProvider | string

// ---------------------------------------------------------------------------
// Workload profiles and task leases (the original's RFC-0010)
// ---------------------------------------------------------------------------

export type WorkloadProfile = 'LIGHT' | 'STANDARD' | 'HEAVY' | 'EXTREME' | 'CUSTOM'

/** A custom workload profile (the original's `ProfileConfig`). */
export interface ProfileConfig {
  readonly baselineLatencyMs: number
  readonly maxDurationMs: number
  readonly heartbeatRequired: boolean
  readonly heartbeatIntervalMs: number
  readonly scarMultiplier: number
}

export interface LeaseOptions {
  /** The profile (else the route's, else STANDARD). Names in any case. */
  profile?: WorkloadProfile | Lowercase<WorkloadProfile> | ProfileConfig
  /** The longest the task may run, in ms (the original's name). */
  timeout?: number
  /** The same as `timeout`. */
  maxDurationMs?: number
  /** Its heartbeat interval in ms, over the profile's. */
  heartbeatMs?: number
  /** Fired when the engine aborts the task; required for HEAVY and EXTREME work. */
  abortController?: AbortController
  /** The task's priority when it is admitted (default: normal). */
  priority?: Priority
  /** Accepted for compatibility. */
  metadata?: Record<string, unknown>
}

export interface HeartbeatPayload {
  progress?: number
  memoryBytes?: number
  status?: string
}

export type LeaseOutcome = 'completed' | 'failed' | 'timeout' | 'aborted'

/** A long-running task admitted on a route. */
export declare class TaskLease {
  readonly id: string
  readonly routeId: string
  readonly profile: WorkloadProfile
  /** ms since the Unix epoch. */
  readonly startedAt: number
  /** ms since the Unix epoch. */
  readonly expiresAt: number
  /** When the next heartbeat is due at the latest (ms since the epoch), if it needs them. */
  readonly heartbeatBy: number | undefined
  readonly isActive: boolean
  /** `max_duration`, `missed_heartbeat` or `shutdown` once the engine aborted it. */
  readonly abortReason: string | undefined
  readonly progress: number
  /** Keeps it alive; throws once it is no longer active. */
  heartbeat(payload?: HeartbeatPayload): void
  /** `completed` (default) and `failed` report it; `aborted` and `timeout` cancel it. */
  release(outcome?: LeaseOutcome): Promise<void>
  /** Ends and reports it; returns the outcome's name. */
  complete(ok?: boolean): string | undefined
  remainingMs(): number
}

// ---------------------------------------------------------------------------
// This project's own API
// ---------------------------------------------------------------------------

export type Priority = 'critical' | 'high' | 'normal' | 'low' | 'bulk'
export type Mode = 'bootstrap' | 'operational' | 'open' | 'half_open'
export type Reason =
  | 'healthy'
  | 'bootstrap'
  | 'probe'
  | 'keepalive'
  | 'open'
  | 'probe_quota'
  | 'overloaded'
  | 'soft_limit'
  | 'throttled'
  | 'held'
  | 'banned'
  | 'shadow'
  | 'untracked'

/** The engine's whole answer for one request. */
export interface Decision {
  readonly admitted: boolean
  readonly verdict: 'admit' | 'shed'
  readonly reason: Reason
  readonly mode: Mode
  /** The resistance the decision saw (ohms). */
  readonly resistance: number
  /** When shed: how long to wait before trying again, in ms. */
  readonly retryAfterMs?: number
  /** The share of the route's traffic its throttle turns away now, when it is acting. */
  readonly throttle?: number
}

/** An admitted request in flight: `end()` reports it, once. */
export declare class Guard {
  readonly route: string
  readonly decision: Decision
  readonly admitted: boolean
  /** Marks the request failed. */
  fail(): this
  /** The route's saturation as measured, in [0, 1]. */
  saturation(value: number): this
  /** Reports latency (since `enter`) and outcome; later calls do nothing. */
  end(): void
  [Symbol.dispose](): void
}

/** A shed, thrown by `run()`. */
export declare class ShedError extends Error {
  readonly route: string
  readonly decision: Decision
  readonly retryAfterMs?: number
}

/** `PhysicsConfig` of this project (snake_case fields, any subset, nested sections merged). */
export type EnginePhysics = Record<string, unknown>

export interface AtrionOptions {
  /** Where state is shared: in memory (default) or one of the project's stores. */
  provider?: Provider
  /** AutoTuner settings, or false to fix the break point (default: on). */
  autoTuner?: Partial<AutoTunerConfig> | boolean
  /** The original's physics constants (reference model). */
  config?: Partial<PhysicsConfig>
  /** Latency objective and criticalities. */
  slo?: SLOConfig
  /** Told of every route() update. */
  observer?: PhysicsObserver
  /** Accepted for compatibility; the engine is always native. */
  engine?: 'auto' | 'wasm' | 'ts' | 'native'
  /** Voltage of route() calls that give none (default 100). */
  defaultVoltage?: number
  /** `default` (recommended, the default) or `reference` (the original's physics). */
  model?: 'reference' | 'default'
  /** This project's PhysicsConfig fields, merged last. */
  physics?: EnginePhysics
  /** This node's id in the cluster (default: generated). */
  nodeId?: string
  /** The cluster's key namespace. */
  namespace?: string
  /** How often the sync pushes and merges, in ms. */
  pulseMs?: number
}

export declare class Atrion {
  constructor(options?: AtrionOptions)
  readonly model: 'reference' | 'default'
  /** Opens the provider's store and joins the cluster. */
  connect(): Promise<void>
  /** Pushes what this node learned and leaves the cluster. */
  disconnect(): Promise<void>
  readonly providerName: string
  readonly isConnected: boolean
  /** Always false: the engine is native. */
  readonly usingWasm: boolean
  /** Learns the telemetry, then decides for a request of this voltage. */
  route(routeId: string, telemetry: Telemetry, voltage?: number): RouteDecision
  getState(routeId: string): RouteState | undefined
  getRoutes(): string[]
  /** Reference model: the shared tuner; default model: `routeId`'s, or all pooled. */
  getTunerStats(routeId?: string): TunerStats | undefined
  resetRoute(routeId: string): Promise<void>

  /** A route's workload profile (or the routes a pattern ending in `*` matches); null removes it. */
  setRouteProfile(routeId: string, profile: WorkloadProfile | Lowercase<WorkloadProfile> | ProfileConfig | null): void
  /** Starts a long-running task: a lease, or a ShedError when the route sheds it. */
  startTask(routeId: string, options?: LeaseOptions): Promise<TaskLease>
  /** Live task leases on the route. */
  getActiveTaskCount(routeId: string): number

  /**
   * Admits or sheds a request on `route` now. `attempt`: the client's retry number (0 or
   * omitted: a first try); a retry is decided one tier lower per retry, critical stays
   * critical. A RangeError for an attempt that is not a whole number >= 0.
   */
  decide(route: string, priority?: Priority, attempt?: number): Decision
  report(route: string, latencyMs: number, ok?: boolean, saturation?: number): Mode
  enter(route: string, priority?: Priority, attempt?: number): Guard
  run<T>(route: string, fn: () => T | Promise<T>, priority?: Priority, attempt?: number): Promise<T>
  setRouteConfig(pattern: string, physics: EnginePhysics | null): void
}

/** The RFC 9457 problem a shed is answered with, and its Retry-After in seconds. */
export declare function shedProblem(
  route: string,
  decision: Decision,
): {
  retryAfter: number
  body: {
    type: 'tag:atrion,2026:problem/shed'
    title: string
    status: 503
    detail: string
    route: string
    reason: Reason
    retry_after_ms: number
  }
}

export declare const MODES: readonly Mode[]
export declare const REASONS: readonly Reason[]
export declare const PRIORITIES: readonly Priority[]

// ---------------------------------------------------------------------------
// Frameworks (structural types: neither framework is a dependency)
// ---------------------------------------------------------------------------

export interface ExpressOptions<Req = any> {
  /** The priority of a request (default: normal). */
  priority?: Priority | ((req: Req) => Priority | undefined)
  /** The route id of a request, instead of its matched pattern; undefined: not decided. */
  route?: (req: Req) => string | undefined
}

/**
 * Express middleware: on a route (`app.get('/users/:id', mw, handler)`) or on the app
 * (`app.use(mw)`). Sheds with 503, `Retry-After` and an `application/problem+json` body.
 */
export declare function express<Req = any, Res = any>(
  atrion: Atrion,
  options?: ExpressOptions<Req>,
): (req: Req, res: Res, next: (err?: unknown) => void) => void

export interface FastifyOptions<Request = any> {
  priority?: Priority | ((request: Request) => Priority | undefined)
}

/** A Fastify plugin (`app.register(fastify(atrion))`), applied to the whole instance. */
export declare function fastify<Instance = any, Request = any>(
  atrion: Atrion,
  options?: FastifyOptions<Request>,
): (instance: Instance, opts: unknown, done: (err?: Error) => void) => void

/** The header a client sets on a retry, as Node.js names it: `x-retry-attempt`. */
export declare const RETRY_ATTEMPT_HEADER: string
/** The retry's number in a request's `x-retry-attempt` header (`req.headers`): a whole number, else 0. */
export declare function retryAttempt(headers: Record<string, string | string[] | undefined>): number
