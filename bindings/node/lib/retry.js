'use strict'
// Retries as a client marks them: the header's name and its parsing (the facade's, through
// the addon), shared by the package's API and its Express and Fastify adapters.

const native = require('./native.js')

/** The header a client sets on a retry (`x-retry-attempt`): the retry's number. */
const RETRY_ATTEMPT_HEADER = native.retryAttemptHeader()

/**
 * The retry's number a request carries in its `x-retry-attempt` header (Node.js's
 * `req.headers`): a whole number, else 0. A malformed header is a first try, never an error.
 */
function retryAttempt(headers) {
  const v = headers && headers[RETRY_ATTEMPT_HEADER]
  if (v === undefined) return 0
  return native.retryAttempt(String(Array.isArray(v) ? v[0] : v))
}

exports.RETRY_ATTEMPT_HEADER = RETRY_ATTEMPT_HEADER
exports.retryAttempt = retryAttempt
