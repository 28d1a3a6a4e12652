'use strict'
// A request carrying `X-Retry-Attempt: N` (a client's N-th retry) is decided N priority tiers
// lower (critical stays critical): under a retry surge, retries are shed before first tries.
// Express middleware: decides before the handler, reports at the end of the response.
//
// The route is the matched route pattern, `METHOD baseUrl+route.path` (`GET /users/:id`),
// never the raw path (one route per user id would teach nothing and fill the table):
// - used on a route (`app.get('/users/:id', guard, handler)`), Express has matched it
//   already: `req.route` and `req.baseUrl` say which;
// - used on the app (`app.use(guard)`), the decision comes before Express routes, so the
//   middleware finds the pattern itself, with Express's own layers (`layer.match`) over the
//   app's router and the routers mounted in it. A request no route matches is not decided.
// The report is on the route as Express saw it at the response's end (`req.route`), with
// the latency to the `finish` of the response; a status >= 500, or a connection closed
// before the response finished, is a failure.

const { performance } = require('node:perf_hooks')
const { retryAttempt } = require('./retry.js')

/** Set on a request once decided: the middleware on the app and on its route decide once. */
const DECIDED = Symbol('atrion.decided')

function routeFromReq(req) {
  return req.route ? `${req.method} ${req.baseUrl || ''}${req.route.path}` : undefined
}

/** The pattern of the route Express will dispatch `method path` to, found in `stack`. */
function match(stack, method, path, base, depth) {
  if (!stack || depth > 8) return undefined
  for (const layer of stack) {
    if (typeof layer.match !== 'function') continue
    // router 2 answers the match (its `path`), router 1 true and sets `layer.path`.
    const m = layer.match(path)
    if (!m) continue
    const matched = typeof m === 'object' ? m.path : layer.path
    if (layer.route) {
      const handles =
        typeof layer.route._handlesMethod === 'function' ? layer.route._handlesMethod(method) : true
      if (handles && typeof layer.route.path === 'string') return `${method} ${base}${layer.route.path}`
      continue
    }
    const inner = layer.handle && (layer.handle.stack || (layer.handle.router && layer.handle.router.stack))
    if (inner && typeof matched === 'string') {
      const rest = path.slice(matched.length) || '/'
      const found = match(inner, method, rest[0] === '/' ? rest : `/${rest}`, base + matched, depth + 1)
      if (found) return found
    }
  }
  return undefined
}

function routerStack(req) {
  const app = req.app
  const router = app && (app.router || app._router)
  return router && router.stack
}

/**
 * @param {import('../index').Atrion} atrion
 * @param {{ priority?: string | ((req) => string | undefined), route?: (req) => string | undefined }} [options]
 */
function express(atrion, options = {}) {
  const priorityOf = typeof options.priority === 'function' ? options.priority : () => options.priority
  const routeOf = options.route
  return function atrionExpress(req, res, next) {
    if (req[DECIDED]) return next()
    let route = routeOf ? routeOf(req) : routeFromReq(req)
    if (route === undefined && !routeOf) {
      route = match(routerStack(req), req.method, req.path, req.baseUrl || '', 0)
    }
    if (route === undefined) return next()
    req[DECIDED] = true
    const d = atrion.decide(route, priorityOf(req), retryAttempt(req.headers))
    if (!d.admitted) {
      const { retryAfter, body } = require('../index.js').shedProblem(route, d)
      res.statusCode = 503
      res.setHeader('Retry-After', String(retryAfter))
      res.setHeader('Content-Type', 'application/problem+json')
      res.end(JSON.stringify(body))
      return
    }
    const start = performance.now()
    let done = false
    const end = (finished) => {
      if (done) return
      done = true
      const at = (!routeOf && routeFromReq(req)) || route
      atrion.report(at, performance.now() - start, finished && res.statusCode < 500)
    }
    res.once('finish', () => end(true))
    res.once('close', () => end(res.writableFinished))
    next()
  }
}

exports.express = express
