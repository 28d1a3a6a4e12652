'use strict'
// Loads the native addon, built by scripts/build.sh into the package's root as index.node.

const path = require('node:path')

const file = path.join(__dirname, '..', 'index.node')
try {
  module.exports = require(file)
} catch (e) {
  const hint =
    e && e.code === 'MODULE_NOT_FOUND'
      ? `${file} is missing: build it with bindings/node/scripts/build.sh (cargo, then a copy)`
      : `${file} could not be loaded: ${e && e.message}`
  const err = new Error(`atrion-node: ${hint}`)
  err.cause = e
  throw err
}
