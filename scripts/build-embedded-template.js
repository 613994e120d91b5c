#!/usr/bin/env node
// Part of `npm run build`: the embedded database a new home starts from (src/lib/store/embedded-template.ts).
import {buildEmbeddedTemplate, embeddedTemplatePath} from '../dist/lib/store/embedded-template.js'

const bytes = await buildEmbeddedTemplate()
console.log(`embedded database template: ${embeddedTemplatePath} (${(bytes / 1048576).toFixed(1)} MiB)`)
