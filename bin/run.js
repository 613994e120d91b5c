#!/usr/bin/env node
import module from 'node:module'

// Node.js 22.1+ keeps compiled code of vidsync and its dependencies between runs (in the OS's
// temporary directory): every command starts faster. Older Node.js lacks it and skips this.
module.enableCompileCache?.()

const {execute} = await import('@oclif/core')
await execute({dir: import.meta.url})
