'use strict'
// A request carrying `X-Retry-Attempt: N` (a client's N-th retry) is decided N priority tiers
// lower (critical stays critical): under a retry surge, retries are shed before first tries.
// Fastify plugin: decides in `onRequest` on the matched route (`METHOD routeOptions.url`,
// as `GET /users/:id`), reports in `onResponse` with the latency to the end of the
// response; a status >= 500 is a failure. It applies to the whole instance it is
// registered on (it skips Fastify's encapsulation, as fastify-plugin does).

const { performance } = require('node:perf_hooks')
const { retryAttempt } = require('./retry.js')

const START = Symbol('atrion.start')
const ROUTE = Symbol('atrion.route')

/**
 * @param {import('../index').Atrion} atrion
 * @param {{ priority?: string | ((request) => string | undefined) }} [options]
 */
function fastify(atrion, options = {}) {
  const priorityOf = typeof options.priority === 'function' ? options.priority : () => options.priority
  function plugin(instance, _opts, done) {
    instance.addHook('onRequest', (request, reply, next) => {
      const url = request.routeOptions && request.routeOptions.url
      if (url === undefined) return next() // no route matched (404)
      const route = `${request.method} ${url}`
      const d = atrion.decide(route, priorityOf(request), retryAttempt(request.headers))
      if (!d.admitted) {
        const { retryAfter, body } = require('../index.js').shedProblem(route, d)
        reply.code(503).header('retry-after', String(retryAfter)).type('application/problem+json')
        reply.send(JSON.stringify(body))
        return
      }
      request[ROUTE] = route
      request[START] = performance.now()
      next()
    })
    instance.addHook('onResponse', (request, reply, next) => {
      const route = request[ROUTE]
      if (route !== undefined) {
        atrion.report(route, performance.now() - request[START], reply.statusCode < 500)
      }
      next()
    })
    done()
  }
  plugin[Symbol.for('skip-override')] = true
  plugin[Symbol.for('fastify.display-name')] = 'atrion'
  return plugin
}

exports.fastify = fastify
