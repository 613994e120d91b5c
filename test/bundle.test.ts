import {execFile} from 'node:child_process'
import {chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {expect} from 'chai'
import unzipper from 'unzipper'
import yazl from 'yazl'

import {type BundleFiles, readBundle, writeBundle} from '../src/lib/bundle/bundle.js'
import {renderBundleReadme} from '../src/lib/bundle/readme.js'
import {InvalidInputError, NotFoundError, PermissionError} from '../src/lib/errors.js'

const run = promisify(execFile)

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (error) {
    return error as Error
  }
  throw new Error('expected a rejection')
}

const readme = {
  certVersion: 1 as const,
  project: 'studio',
  device: 'laptop-1',
  overlayIp: '10.99.1.5',
  lighthouses: [{overlayIp: '10.99.1.1', endpoints: ['192.0.2.1:4242']}],
  notAfter: '2027-01-01T00:00:00.000Z',
}

const files: BundleFiles = {
  'ca.crt': '-----BEGIN NEBULA CERTIFICATE-----\nca\n-----END NEBULA CERTIFICATE-----\n',
  'node.crt': Buffer.from('-----BEGIN NEBULA CERTIFICATE-----\nnode\n-----END NEBULA CERTIFICATE-----\n'),
  'nebula.yml': 'pki:\n  ca: ca.crt\n',
  'README.md': renderBundleReadme({...readme, includesPrivateKey: false}),
  'vidsync.json': JSON.stringify({project: 'studio', device: 'laptop-1'}),
}

const mode = async (path: string) => (await stat(path)).mode & 0o777

describe('bundle', () => {
  let root: string
  let immutableDir: string | undefined

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'vidsync-bundle-'))
  })

  after(async () => {
    if (immutableDir) await run('chattr', ['-i', immutableDir]).catch(() => undefined)
    await rm(root, {recursive: true, force: true})
  })

  it('round-trips through a zip, node.key with mode 0600', async () => {
    const outPath = join(root, 'with-key.zip')
    const withKey = {...files, 'node.key': '-----BEGIN NEBULA X25519 PRIVATE KEY-----\nkey\n-----END NEBULA X25519 PRIVATE KEY-----\n'}
    const written = await writeBundle({outPath, files: withKey})
    expect(written).to.deep.equal({path: outPath, bytes: (await stat(outPath)).size})
    expect(await mode(outPath)).to.equal(0o600)
    const read = await readBundle(outPath)
    expect([...read.keys()]).to.have.members(Object.keys(withKey))
    for (const [name, content] of Object.entries(withKey)) expect(read.get(name)?.toString()).to.equal(content.toString())
    const modes = Object.fromEntries(
      (await unzipper.Open.file(outPath)).files.map((entry) => [entry.path, (entry.externalFileAttributes >>> 16) & 0o777]),
    )
    expect(modes).to.deep.equal({'ca.crt': 0o644, 'node.crt': 0o644, 'nebula.yml': 0o644, 'README.md': 0o644, 'vidsync.json': 0o644, 'node.key': 0o600})
  })

  it('writes a bundle without a key readable like any certificate, replacing an older one', async () => {
    const outPath = join(root, 'plain.zip')
    await writeFile(outPath, 'old')
    await writeBundle({outPath, files})
    expect(await mode(outPath)).to.equal(0o644)
    expect((await readBundle(outPath)).has('node.key')).to.equal(false)
  })

  it('never puts a CA key into a bundle', async () => {
    const caKey = '-----BEGIN NEBULA ED25519 PRIVATE KEY-----\nx\n-----END NEBULA ED25519 PRIVATE KEY-----\n'
    const error = await rejection(writeBundle({outPath: join(root, 'ca-key.zip'), files: {...files, 'node.key': caKey}}))
    expect(error).to.be.instanceOf(InvalidInputError)
    expect(await readdir(root)).not.to.include('ca-key.zip')
  })

  it('leaves no temporary file when the final rename fails', async () => {
    const dir = await mkdtemp(join(root, 'atomic-'))
    const outPath = join(dir, 'bundle.zip')
    await mkdir(join(outPath, 'occupied'), {recursive: true})
    const error = await rejection(writeBundle({outPath, files}))
    expect(error).to.be.instanceOf(InvalidInputError)
    expect(error.message).to.include(outPath)
    expect(await readdir(dir)).to.deep.equal(['bundle.zip'])
  })

  it('names the path when the directory is missing or not a directory', async () => {
    const missing = join(root, 'no-such-dir', 'bundle.zip')
    const error = await rejection(writeBundle({outPath: missing, files}))
    expect(error).to.be.instanceOf(InvalidInputError)
    expect(error.message).to.equal(`cannot write ${missing}: directory ${join(root, 'no-such-dir')} does not exist`)
    await writeFile(join(root, 'a-file'), '')
    const underFile = join(root, 'a-file', 'bundle.zip')
    expect((await rejection(writeBundle({outPath: underFile, files}))).message).to.include(underFile)
  })

  it('reports an unwritable directory as a permission error naming the path', async () => {
    const dir = await mkdtemp(join(root, 'readonly-'))
    await chmod(dir, 0o555)
    if (process.getuid?.() === 0) {
      // root ignores modes; an immutable directory (chattr, from e2fsprogs) refuses even root.
      await run('chattr', ['+i', dir])
      immutableDir = dir
    }
    const outPath = join(dir, 'bundle.zip')
    const error = await rejection(writeBundle({outPath, files}))
    expect(error).to.be.instanceOf(PermissionError)
    expect(error.message).to.equal(`cannot write ${outPath}: permission denied`)
    expect(await readdir(dir)).to.deep.equal([])
  })

  it('refuses a missing, corrupt or foreign file with a clear message', async () => {
    const missing = join(root, 'absent.zip')
    expect(await rejection(readBundle(missing))).to.be.instanceOf(NotFoundError)

    const corrupt = join(root, 'corrupt.zip')
    await writeFile(corrupt, Buffer.alloc(4096, 0x5a))
    const corruptError = await rejection(readBundle(corrupt))
    expect(corruptError).to.be.instanceOf(InvalidInputError)
    expect(corruptError.message).to.match(new RegExp(`^${corrupt} is not a readable zip file`))

    const foreign = join(root, 'foreign.zip')
    const zip = new yazl.ZipFile()
    zip.addBuffer(Buffer.from('hello'), 'hello.txt')
    zip.addBuffer(Buffer.from('x'), 'node.crt')
    zip.end()
    await writeFile(foreign, zip.outputStream)
    const foreignError = await rejection(readBundle(foreign))
    expect(foreignError).to.be.instanceOf(InvalidInputError)
    expect(foreignError.message).to.equal(`${foreign} is not a vidsync bundle: it lacks ca.crt, vidsync.json`)
  })

  it('writes a README with the next commands, and a loud warning only with a private key', () => {
    const plain = renderBundleReadme({...readme, includesPrivateKey: false, bundleName: 'laptop-1.zip'})
    expect(plain).to.include('vidsync join laptop-1.zip')
    expect(plain).to.include('sudo vidsync up --detach')
    for (const text of ['studio', 'laptop-1', '10.99.1.5', '10.99.1.1 at 192.0.2.1:4242', '2027-01-01T00:00:00.000Z']) {
      expect(plain).to.include(text)
    }
    expect(plain).to.include('- Needs: nebula 1.6.0 or newer (v1 certificates)')
    expect(renderBundleReadme({...readme, certVersion: 2, includesPrivateKey: false})).to.include('- Needs: nebula 1.10.0 or newer (v2 certificates)')
    expect(plain).to.include("never one taken from this bundle")
    expect(plain).not.to.include('WARNING')
    const withKey = renderBundleReadme({...readme, includesPrivateKey: true})
    expect(withKey).to.include('vidsync join bundle.zip')
    expect(withKey).to.match(/WARNING: this bundle contains the PRIVATE KEY/)
  })
})
