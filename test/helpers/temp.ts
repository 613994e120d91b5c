import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

/** A temp directory per call; removeTempDirs() in an after hook deletes them all. */
const created: string[] = []

export async function tempDir(prefix = 'vidsync-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  created.push(dir)
  return dir
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(created.splice(0).map((dir) => rm(dir, {recursive: true, force: true})))
}
