#!/usr/bin/env node
import module from 'node:module'

// Node.js 22.1+ keeps compiled code of vidsync and its dependencies between runs (in the OS's
// temporary directory): every command starts faster. Older Node.js lacks it and skips this.
module.enableCompileCache?.()

// @oclif/core checks on import that Node.js satisfies its own engines (>=18), loading semver's
// 47 files to do so: package.json's engines already ask more of Node.js, and npm checks them.
// The variable is set for that import only, so programs that vidsync runs do not inherit it.
const engineCheck = process.env.OCLIF_DISABLE_ENGINE_WARNING
process.env.OCLIF_DISABLE_ENGINE_WARNING = '1'
const {execute} = await import('@oclif/core')
if (engineCheck === undefined) delete process.env.OCLIF_DISABLE_ENGINE_WARNING
else process.env.OCLIF_DISABLE_ENGINE_WARNING = engineCheck
await execute({dir: import.meta.url})
