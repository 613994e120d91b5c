import {createHash} from 'node:crypto'
import {readFileSync} from 'node:fs'
import {chmod, mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {expect} from 'chai'

import {
  ConflictError,
  InvalidInputError,
  MissingDependencyError,
  NotFoundError,
  PermissionError,
  ToolFailedError,
  VidsyncError,
} from '../src/lib/errors.js'
import {resolveTools, runTool} from '../src/lib/exec.js'
import {caInfo, caPaths, exportCa, initCa, loadCa} from '../src/lib/pki/ca.js'
import {readCert, verifyCert} from '../src/lib/pki/cert.js'
import {endorseCa, endorsementValid} from '../src/lib/pki/endorse.js'
import {createKeyPair, validatePublicKey} from '../src/lib/pki/keys.js'
import {capDurationSeconds, signDevice} from '../src/lib/pki/sign.js'

const hour = 3600
const day = 86_400

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (error) {
    return error as Error
  }
  throw new Error('expected a rejection')
}

function thrown(work: () => unknown): Error {
  try {
    work()
  } catch (error) {
    return error as Error
  }
  throw new Error('expected an exception')
}

const mode = async (path: string) => (await stat(path)).mode & 0o777

describe('pki', () => {
  let root: string
  let counter = 0
  const newDir = () => mkdtemp(join(root, `t${counter++}-`))

  /** A nebula-cert stand-in: the real one, except that `sign` fails after writing its output. */
  let failingSign: string

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'vidsync-pki-'))
    failingSign = join(root, 'nebula-cert-failing-sign')
    await writeFile(
      failingSign,
      '#!/bin/sh\nif [ "$1" = sign ]; then nebula-cert "$@"; echo "Error: injected signing failure" >&2; exit 1; fi\nexec nebula-cert "$@"\n',
      {mode: 0o755},
    )
  })

  after(async () => {
    await rm(root, {recursive: true, force: true})
  })

  describe('runTool', () => {
    it('runs a tool with an argument array', async () => {
      const result = await runTool('nebula-cert', ['-version'])
      expect(result.exitCode).to.equal(0)
      expect(result.stdout).to.include('1.6.1')
    })

    it('reports a missing binary with an install hint', async () => {
      const error = await rejection(runTool('nebula-cert', ['-version'], {tools: resolveTools({nebulaCert: join(root, 'absent')})}))
      expect(error).to.be.instanceOf(MissingDependencyError)
      expect(error.message).to.match(/^nebula-cert not found at .*absent: install it with `apt-get install nebula`/)
      expect(error.message).to.include('https://github.com/slackhq/nebula/releases')
    })

    it('takes the tool path from VIDSYNC_NEBULA_CERT', async () => {
      process.env.VIDSYNC_NEBULA_CERT = join(root, 'absent-too')
      try {
        const error = await rejection(runTool('nebula-cert', ['-version']))
        expect(error).to.be.instanceOf(MissingDependencyError)
        expect(error.message).to.include('absent-too')
      } finally {
        delete process.env.VIDSYNC_NEBULA_CERT
      }
    })

    it("turns a non-zero exit into a one-line error from the tool's stderr", async () => {
      const error = await rejection(runTool('nebula-cert', ['sign']))
      expect(error).to.be.instanceOf(ToolFailedError)
      expect(error.message).to.equal('nebula-cert sign failed: -name is required')
    })

    it('stops a tool that runs too long', async () => {
      const slow = join(root, 'slow')
      await writeFile(slow, '#!/bin/sh\nexec sleep 5\n', {mode: 0o755})
      const started = Date.now()
      const error = await rejection(runTool('nebula-cert', ['ca'], {tools: resolveTools({nebulaCert: slow}), timeoutMs: 200}))
      expect(error).to.be.instanceOf(ToolFailedError)
      expect(error.message).to.equal('nebula-cert ca did not finish within 0.2s')
      expect(Date.now() - started).to.be.below(4000)
    })
  })

  describe('CA', () => {
    it('creates ca.crt 0644 and ca.key 0600 in a 0700 directory', async () => {
      const home = await newDir()
      const ca = await initCa({home, name: 'Studio CA', durationSeconds: 2 * day})
      expect(await mode(ca.dir)).to.equal(0o700)
      expect(await mode(ca.keyPath)).to.equal(0o600)
      expect(await mode(ca.certPath)).to.equal(0o644)
      expect(await readdir(ca.dir)).to.have.members(['ca.crt', 'ca.key'])
      expect(ca.name).to.equal('Studio CA')
      expect(ca.fingerprint).to.match(/^[0-9a-f]{64}$/)
      const lifetime = Date.parse(ca.notAfter) - Date.parse(ca.notBefore)
      expect(lifetime).to.equal(2 * day * 1000)
      expect(await caInfo({home})).to.deep.equal({
        name: 'Studio CA',
        fingerprint: ca.fingerprint,
        notBefore: ca.notBefore,
        notAfter: ca.notAfter,
        groups: [],
        ips: [],
        certVersion: 1,
        nebulaNeeded: 'nebula 1.6.0 or newer',
        // A two-day CA is inside the 90-day warning window from the start.
        warning: `the CA "Studio CA" expires in 1 day (${ca.notAfter}): every certificate it signed stops working then; replace it now with \`vidsync ca rotate\`, which keeps devices online`,
      })
      const loaded = await loadCa({home})
      expect(loaded.cert.isCa).to.equal(true)
    })

    it('never replaces an existing CA', async () => {
      const home = await newDir()
      const {keyPath, certPath} = await initCa({home, name: 'first'})
      const key = await readFile(keyPath)
      const error = await rejection(initCa({home, name: 'second'}))
      expect(error).to.be.instanceOf(ConflictError)
      expect(error.message).to.include('invalidate every certificate')
      expect(error.message).to.include('move')
      expect(await readFile(keyPath)).to.deep.equal(key)
      // A lone certificate or a lone key also counts as an existing CA.
      await rm(keyPath)
      expect(await rejection(initCa({home, name: 'third'}))).to.be.instanceOf(ConflictError)
      await rm(certPath)
      await writeFile(keyPath, key, {mode: 0o600})
      expect(await rejection(initCa({home, name: 'fourth'}))).to.be.instanceOf(ConflictError)
    })

    it('refuses a CA key readable by others', async () => {
      const home = await newDir()
      const {keyPath} = await initCa({home, name: 'ca'})
      await chmod(keyPath, 0o644)
      const error = await rejection(loadCa({home}))
      expect(error).to.be.instanceOf(PermissionError)
      expect(error.message).to.equal(`CA key ${keyPath} has mode 0644: run chmod 600 ${keyPath}`)
      await chmod(keyPath, 0o400)
      await loadCa({home})
    })

    it('reports a missing CA with the command that creates one', async () => {
      const home = await newDir()
      for (const attempt of [loadCa({home}), caInfo({home}), exportCa({home})]) {
        const error = await rejection(attempt)
        expect(error).to.be.instanceOf(NotFoundError)
        expect(error.message).to.include('run `vidsync ca init`')
      }
    })

    it('refuses to use an expired CA', async () => {
      const home = await newDir()
      await initCa({home, name: 'short', durationSeconds: day})
      const error = await rejection(loadCa({home, now: new Date(Date.now() + 2 * day * 1000)}))
      expect(error).to.be.instanceOf(InvalidInputError)
      expect(error.message).to.match(/expired at \d{4}-/)
    })

    it('exports the public certificate only', async () => {
      const home = await newDir()
      const {certPath} = await initCa({home, name: 'ca'})
      const pem = await exportCa({home})
      expect(pem).to.equal(await readFile(certPath, 'utf8'))
      expect(pem).to.match(/^-----BEGIN NEBULA CERTIFICATE-----\n/)
      expect(pem).not.to.include('PRIVATE')
    })

    it('leaves nothing behind when nebula-cert fails', async () => {
      const home = await newDir()
      const error = await rejection(initCa({home, name: 'ca', tools: resolveTools({nebulaCert: '/bin/false'})}))
      expect(error).to.be.instanceOf(ToolFailedError)
      expect(await readdir(caPaths(home).dir)).to.deep.equal([])
    })

    it("endorses another CA with a real nebula-cert CA key: the endorser's certificate verifies it, nothing else does", async () => {
      const [first, second] = await Promise.all([newDir(), newDir()])
      const [old, next] = await Promise.all([initCa({home: first, name: 'old'}), initCa({home: second, name: 'next'})])
      const oldCert = await readCert(old.certPath)
      const nextCert = await readCert(next.certPath)
      const endorsement = endorseCa({caKeyPem: await readFile(old.keyPath), endorser: oldCert, fingerprint: next.fingerprint})
      expect(endorsement).to.include({ca: next.fingerprint, endorser: old.fingerprint})
      expect(endorsementValid(endorsement, oldCert.publicKey)).to.equal(true)
      expect(endorsementValid(endorsement, nextCert.publicKey)).to.equal(false)
      expect(endorsementValid({...endorsement, ca: old.fingerprint}, oldCert.publicKey)).to.equal(false)
      // The key must be the endorser's: the other CA's key is refused.
      expect(thrown(() => endorseCa({caKeyPem: readFileSync(next.keyPath), endorser: oldCert, fingerprint: next.fingerprint}))).to.be.instanceOf(InvalidInputError)
    })
  })

  describe('keys', () => {
    it('creates a key pair: private 0600, public accepted by validatePublicKey', async () => {
      const outDir = join(await newDir(), 'keys')
      const keys = await createKeyPair({outDir, name: 'laptop'})
      expect(keys.privateKeyPath).to.equal(join(outDir, 'laptop.key'))
      expect(keys.publicKeyPath).to.equal(join(outDir, 'laptop.pub'))
      expect(await mode(keys.privateKeyPath)).to.equal(0o600)
      expect(await readdir(outDir)).to.have.members(['laptop.key', 'laptop.pub'])
      expect(await readFile(keys.privateKeyPath, 'utf8')).to.match(/^-----BEGIN NEBULA X25519 PRIVATE KEY-----/)
      const publicKey = validatePublicKey(await readFile(keys.publicKeyPath))
      expect(publicKey.pem).to.equal(keys.publicKey)
      const raw = Buffer.from(keys.publicKey.split('\n')[1] ?? '', 'base64')
      expect(publicKey.fingerprint).to.equal(createHash('sha256').update(raw).digest('hex'))
    })

    it('never overwrites a key', async () => {
      const outDir = await newDir()
      const first = await createKeyPair({outDir})
      const key = await readFile(first.privateKeyPath)
      const error = await rejection(createKeyPair({outDir}))
      expect(error).to.be.instanceOf(ConflictError)
      expect(error.message).to.include(first.privateKeyPath)
      expect(await readFile(first.privateKeyPath)).to.deep.equal(key)
      expect(await readdir(outDir)).to.have.members(['node.key', 'node.pub'])
    })

    describe('validatePublicKey', () => {
      let pem: string
      before(async () => {
        pem = (await createKeyPair({outDir: await newDir()})).publicKey
      })

      it('normalizes line endings and surrounding whitespace to the same key and fingerprint', () => {
        const reference = validatePublicKey(pem)
        const messy = validatePublicKey(`\r\n  ${pem.replaceAll('\n', '\r\n')}\n\n`)
        expect(messy).to.deep.equal(reference)
      })

      const reject = (input: string | Buffer, pattern: RegExp) => {
        const error = thrown(() => validatePublicKey(input))
        expect(error).to.be.instanceOf(InvalidInputError)
        expect(error.message).to.match(pattern)
        expect(error.message).not.to.include('\n')
      }

      it('rejects garbage', () => reject('x'.repeat(200), /expected a "-----BEGIN NEBULA X25519 PUBLIC KEY-----"/))
      it('rejects input that is too short', () => reject('-----BEGIN', /not a Nebula public key: 10 bytes/))
      it('rejects input that is too long', () => reject(Buffer.alloc(10_001, 'a'), /10001 bytes/))
      it('rejects a private key, saying so', () => reject(pem.replaceAll('PUBLIC', 'PRIVATE'), /this is a private key/))
      it('rejects another PEM type', async () => {
        const home = await newDir()
        await initCa({home, name: 'ca'})
        reject(await exportCa({home}), /expected NEBULA X25519 PUBLIC KEY, got NEBULA CERTIFICATE/)
      })
      it('rejects a key that is not 32 bytes', () => {
        const short = `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${Buffer.alloc(31, 7).toString('base64')}\n-----END NEBULA X25519 PUBLIC KEY-----\n`
        reject(short, /base64 of 32 bytes/)
        reject(pem.replace(/\n(.)/, '\n!$1'), /base64 of 32 bytes/)
      })
      it('rejects two keys or extra text', () => {
        reject(pem + pem, /alone/)
        reject(`hello ${pem}`, /alone/)
      })
    })
  })

  describe('signing', () => {
    let home: string
    let publicKeyPem: string

    before(async () => {
      home = await newDir()
      await initCa({home, name: 'ca', durationSeconds: 10 * day})
      publicKeyPem = (await createKeyPair({outDir: await newDir()})).publicKey
    })

    const device = {name: 'laptop-1', ip: '10.99.1.5', prefixLength: 24, groups: ['studio', 'editors']}

    it('signs a device certificate that nebula-cert verifies against the CA', async () => {
      const signed = await signDevice({home, ...device, publicKeyPem, durationSeconds: day})
      expect(signed.privateKeyPem).to.equal(undefined)
      const dir = await newDir()
      const certPath = join(dir, 'node.crt')
      await writeFile(certPath, signed.certPem)
      await verifyCert({caCertPath: caPaths(home).certPath, certPath})
      const cert = await readCert(certPath)
      expect(cert).to.include({name: 'laptop-1', fingerprint: signed.fingerprint, notAfter: signed.notAfter, isCa: false})
      expect(cert.ips).to.deep.equal(['10.99.1.5/24'])
      expect(cert.groups).to.deep.equal(['studio', 'editors'])
      expect(cert.issuer).to.equal((await caInfo({home})).fingerprint)
      expect(Date.parse(signed.notAfter) - Date.parse(cert.notBefore)).to.equal(day * 1000)
      expect(await readdir(caPaths(home).dir)).to.have.members(['ca.crt', 'ca.key'])
    })

    it('generates the device key on request and returns it', async () => {
      const signed = await signDevice({home, ...device, generateKey: true})
      expect(signed.privateKeyPem).to.match(/^-----BEGIN NEBULA X25519 PRIVATE KEY-----/)
      // Without a duration the certificate lasts as long as the CA allows.
      const caNotAfter = Date.parse((await caInfo({home})).notAfter)
      expect(caNotAfter - Date.parse(signed.notAfter)).to.be.within(0, 2 * 60 * 1000)
    })

    it('refuses a certificate that would outlive the CA and suggests a duration', async () => {
      const error = await rejection(signDevice({home, ...device, publicKeyPem, durationSeconds: 30 * day}))
      expect(error).to.be.instanceOf(InvalidInputError)
      expect(error.message).to.match(/the CA expires at \S+, a certificate must not outlive it: use --duration 9d23h5\dm\d*s? or less/)
    })

    it('caps a renewal to what the CA allows', () => {
      const now = new Date('2030-01-01T00:00:00Z')
      const caNotAfter = '2030-01-11T00:00:00.000Z'
      expect(capDurationSeconds({caNotAfter, requestedSeconds: day, now})).to.equal(day)
      expect(capDurationSeconds({caNotAfter, requestedSeconds: 30 * day, now})).to.equal(10 * day - 60)
      expect(capDurationSeconds({caNotAfter, now})).to.equal(10 * day - 60)
      expect(thrown(() => capDurationSeconds({caNotAfter, now: new Date('2030-01-12T00:00:00Z')}))).to.be.instanceOf(InvalidInputError)
    })

    it('refuses to sign with an expired CA', async () => {
      const error = await rejection(signDevice({home, ...device, publicKeyPem, now: new Date(Date.now() + 11 * day * 1000)}))
      expect(error).to.be.instanceOf(InvalidInputError)
      expect(error.message).to.include('expired')
    })

    it('rejects a bad public key, address or group before signing', async () => {
      for (const options of [
        {...device, publicKeyPem: 'nonsense'},
        {...device, ip: '10.99.1.256', publicKeyPem},
        {...device, prefixLength: 33, publicKeyPem},
        {...device, groups: ['a,b'], publicKeyPem},
      ]) {
        expect(await rejection(signDevice({home, ...options}))).to.be.instanceOf(InvalidInputError)
      }
    })

    it('does not verify against another CA', async () => {
      const signed = await signDevice({home, ...device, publicKeyPem, durationSeconds: hour})
      const other = await newDir()
      const {certPath: otherCa} = await initCa({home: other, name: 'other'})
      const certPath = join(other, 'node.crt')
      await writeFile(certPath, signed.certPem)
      const error = await rejection(verifyCert({caCertPath: otherCa, certPath}))
      expect(error).to.be.instanceOf(InvalidInputError)
      expect(error.message).to.include('could not find ca for the certificate')
    })

    it('removes its work directory when signing fails', async () => {
      for (const nebulaCert of [failingSign, '/bin/false']) {
        const tools = resolveTools({nebulaCert})
        for (const keyOptions of [{publicKeyPem}, {generateKey: true as const}]) {
          const error = await rejection(signDevice({home, ...device, ...keyOptions, durationSeconds: hour, tools}))
          expect(error).to.be.instanceOf(VidsyncError)
          expect(await readdir(caPaths(home).dir)).to.have.members(['ca.crt', 'ca.key'])
        }
      }
      const error = await rejection(signDevice({home, ...device, publicKeyPem, tools: resolveTools({nebulaCert: failingSign})}))
      expect(error.message).to.equal('nebula-cert sign failed: injected signing failure')
    })
  })
})
