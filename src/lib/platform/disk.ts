import {statfs} from 'node:fs/promises'
import {dirname, resolve} from 'node:path'

/**
 * Free space for this user (statfs's bavail, which leaves out the blocks reserved for root) on
 * the file system that holds `path`, or its nearest existing parent when `path` does not exist
 * yet. Node's statfs works on Linux, macOS and Windows (Node >= 18.15).
 */
export async function freeSpace(path: string): Promise<{bytes: number; checked: string}> {
  let checked = resolve(path)
  for (;;) {
    try {
      const stats = await statfs(checked)
      return {bytes: Number(stats.bavail) * Number(stats.bsize), checked}
    } catch (error) {
      const parent = dirname(checked)
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === checked) throw error
      checked = parent
    }
  }
}
