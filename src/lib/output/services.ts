import {systemOverlayFix} from '../nebula/system-overlay.js'
import type {ServiceReport} from '../up/services.js'

/** One line per service: who keeps it running and its state, or that vidsync supervises it where no manager runs. */
export function renderServices(reports: ServiceReport[]): string {
  return reports
    .map((report) => {
      const what = report.role === 'nebula' ? 'Nebula service' : 'Agent service '
      const pid = report.pid === null ? '' : `, pid ${report.pid}`
      if (report.manager === null) return `${what}  none: ${report.fallback}; ${report.state}${pid}`
      const stale = report.stale ? ' (from an older install: `sudo vidsync down --uninstall`, then `vidsync up`)' : ''
      const overlay = report.staleOverlay ? `\n  stale: ${report.staleOverlay}: ${systemOverlayFix}` : ''
      return `${what}  ${report.manager} ${report.name}: ${report.state}${pid}${stale}${overlay}`
    })
    .join('\n')
}
