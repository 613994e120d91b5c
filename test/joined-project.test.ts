import {readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {expect} from 'chai'
import YAML from 'yaml'

import {InvalidInputError, NotFoundError} from '../src/lib/errors.js'
import {installSystemOverlay, systemOverlayPaths} from '../src/lib/nebula/system-overlay.js'
import {hostDeps, type Platform, platformFor} from '../src/lib/platform/index.js'
import {JoinedProject, projectDir} from '../src/lib/project/joined-project.js'
import type {BundleManifest} from '../src/lib/bundle/manifest.js'
import {placeholderBundle, sampleManifest} from './helpers/joined.js'
import {removeTempDirs, tempDir} from './helpers/temp.js'

const manifest = sampleManifest({peers: [{name: 'grader', ip: '10.95.0.6', syncthingId: null}], blocklist: ['b'.repeat(64)]})
const files = placeholderBundle(manifest)
const platform = (os: Platform['os'], cpuCount: number): Platform => ({...platformFor(os), cpuCount})
const readConfig = async (project: JoinedProject) => YAML.parse(await readFile(project.configPath, 'utf8'), {version: '1.1'})

describe('JoinedProject: the one model of a project joined on a device', () => {
  after(removeTempDirs)

  it('renders nebula.yml with tun.dev where the OS honours it (not macOS), routines from the CPU count on Linux and 1 elsewhere', async () => {
    const expected: [Platform, string | undefined, number][] = [
      [platform('linux', 1), 'vs-films', 1],
      [platform('linux', 2), 'vs-films', 1],
      [platform('linux', 8), 'vs-films', 4],
      [platform('linux', 64), 'vs-films', 4],
      [platform('darwin', 8), undefined, 1],
      [platform('win32', 8), 'vs-films', 1],
    ]
    for (const [each, tunDev, routines] of expected) {
      const {project} = await JoinedProject.install(await tempDir(), files, each)
      const config = await readConfig(project)
      expect(config.tun.dev, each.os).to.equal(tunDev)
      expect(config.routines, `${each.os} ${each.cpuCount}`).to.equal(routines)
      expect(project.tunDev).to.equal(tunDev)
      expect(config.pki).to.include({ca: project.caPath, cert: project.certPath, key: project.keyPath})
      expect(config.pki.blocklist).to.deep.equal(manifest.blocklist)
      expect(config.static_host_map).to.deep.equal({'10.95.0.1': ['192.0.2.1:4242']})
      expect(config.relay.relays).to.deep.equal(['10.95.0.1'])
    }
  })

  it('writes the key 0600, changes nothing on a second install, and opens what it wrote', async () => {
    const home = await tempDir()
    const {project, changed} = await JoinedProject.install(home, files, platform('linux', 2))
    expect(changed).to.equal(true)
    expect((await stat(project.keyPath)).mode & 0o777).to.equal(0o600)
    expect((await stat(project.dir)).mode & 0o777).to.equal(0o700)
    expect((await JoinedProject.install(home, files, platform('linux', 2))).changed).to.equal(false)
    const opened = await JoinedProject.find({home, platform: platform('linux', 2)})
    expect(opened.manifest).to.deep.equal(manifest)
    expect({name: opened.name, overlayIp: opened.overlayIp, amLighthouse: opened.amLighthouse, lighthouseIps: opened.lighthouseIps}).to.deep.equal({
      name: 'films',
      overlayIp: '10.95.0.5',
      amLighthouse: false,
      lighthouseIps: ['10.95.0.1'],
    })
  })

  it('reads the blocklist of a project joined before manifests carried it from its nebula.yml, and nothing else', async () => {
    const home = await tempDir()
    const {project} = await JoinedProject.install(home, files, platform('linux', 2))
    const legacy: Partial<BundleManifest> = {...manifest}
    delete legacy.blocklist
    await writeFile(join(project.dir, 'vidsync.json'), JSON.stringify(legacy))
    await writeFile(project.configPath, YAML.stringify({pki: {blocklist: ['c'.repeat(64)]}, sshd: {enabled: true}}))
    const opened = await JoinedProject.open(project.dir, platform('linux', 2))
    expect(opened.manifest.blocklist).to.deep.equal(['c'.repeat(64)])
    expect(opened.renderConfig()).not.to.contain('sshd')
  })

  it('updates manifest and config together, checking the update like a bundle', async () => {
    const home = await tempDir()
    const {project} = await JoinedProject.install(home, files, platform('linux', 2))
    const updated = await project.update({...manifest, blocklist: []})
    expect((await readConfig(updated)).pki.blocklist).to.deep.equal([])
    expect(JSON.parse(await readFile(join(project.dir, 'vidsync.json'), 'utf8')).blocklist).to.deep.equal([])
    let error: unknown
    await project.update({...manifest, peers: [{name: 'evil\n', ip: '10.95.0.9', syncthingId: null}]}).catch((caught: unknown) => (error = caught))
    expect(error).to.be.instanceOf(InvalidInputError)
    expect((error as Error).message).to.contain('peers[0].name is not a valid name')
    expect(JSON.parse(await readFile(join(project.dir, 'vidsync.json'), 'utf8')).peers).to.deep.equal(manifest.peers)
  })

  it('says what is missing or unreadable, in one line', async () => {
    const home = await tempDir()
    let error: unknown
    await JoinedProject.find({home}).catch((caught: unknown) => (error = caught))
    expect(error).to.be.instanceOf(NotFoundError)
    const {project} = await JoinedProject.install(home, files, platform('linux', 2))
    await writeFile(join(project.dir, 'vidsync.json'), '{"version": 1, "project": "films"')
    await JoinedProject.open(projectDir(home, 'films')).catch((caught: unknown) => (error = caught))
    expect(error).to.be.instanceOf(InvalidInputError)
    expect((error as Error).message).to.equal(`the project in ${project.dir} has an unreadable vidsync.json: run \`vidsync join <bundle>\` again`)
  })
  it('copies the overlay for the root service into the system directory, root-only, with a nebula.yml rendered from the manifest', async () => {
    const home = await tempDir()
    const {project} = await JoinedProject.install(home, files, platform('linux', 2))
    // A user-writable nebula.yml that asks for an admin interface: never reaches the system copy.
    await writeFile(project.configPath, `${await readFile(project.configPath, 'utf8')}sshd:\n  enabled: true\n  listen: 127.0.0.1:2222\n`)
    const system = await tempDir()
    const linux = platformFor('linux', {...hostDeps(), env: {VIDSYNC_SYSTEM_DIR: system}})
    const copy = await installSystemOverlay(project, linux)
    expect(copy.dir).to.equal(join(system, 'films'))
    expect((await stat(copy.dir)).mode & 0o777).to.equal(0o700)
    for (const path of [copy.configPath, copy.caPath, copy.certPath, copy.keyPath]) expect((await stat(path)).mode & 0o777, path).to.equal(0o600)
    expect(await readFile(copy.keyPath)).to.deep.equal(files.keyPem)
    const config = YAML.parse(await readFile(copy.configPath, 'utf8'), {version: '1.1'})
    expect(config.pki).to.include({ca: copy.caPath, cert: copy.certPath, key: copy.keyPath})
    expect(config.sshd).to.equal(undefined)
    expect(config.tun.dev).to.equal('vs-films')
    expect(config.pki.blocklist).to.deep.equal(manifest.blocklist)
    // Per OS, where the elevated step puts it.
    expect(systemOverlayPaths('films', platformFor('linux', {...hostDeps(), env: {}})).dir).to.equal('/etc/vidsync/films')
    expect(systemOverlayPaths('films', platformFor('darwin', {...hostDeps(), env: {}})).keyPath).to.equal('/Library/Application Support/vidsync/films/node.key')
    expect(systemOverlayPaths('films', platformFor('win32', {...hostDeps(), env: {ProgramData: 'C:\\ProgramData'}})).configPath).to.equal('C:\\ProgramData\\vidsync\\films\\nebula.yml')
  })
})
