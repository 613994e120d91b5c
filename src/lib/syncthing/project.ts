import {JoinedProject} from '../project/joined-project.js'
import type {FolderType, SyncthingClient} from './client.js'
import {addFolder, type AddFolderResult, projectDeviceIds} from './folders.js'

export interface AddProjectFolderOptions {
  client: SyncthingClient
  vidsyncHome: string
  path: string
  project?: string
  folderId?: string
  label?: string
  type?: FolderType
}

export interface AddProjectFolderResult extends AddFolderResult {
  project: string
  /** Peers in the manifest without a Syncthing ID yet: they join the share once they connect and are accepted. */
  skippedPeers: string[]
}

/** Shares a directory with the peers listed in a joined project's manifest, at their overlay addresses, and the project's devices already accepted here. */
export async function addProjectFolder(options: AddProjectFolderOptions): Promise<AddProjectFolderResult> {
  const {manifest} = await JoinedProject.find({home: options.vidsyncHome, project: options.project})
  const peers = manifest.peers.flatMap((peer) => (peer.syncthingId ? [{deviceId: peer.syncthingId, name: peer.name, overlayIp: peer.ip}] : []))
  const result = await addFolder({
    client: options.client,
    path: options.path,
    project: manifest.project,
    folderId: options.folderId,
    label: options.label,
    type: options.type,
    peers,
    projectCidr: manifest.cidr,
    // Devices that `up` accepted (they joined after this device's bundle was issued): sharing with
    // them from the start rather than on the loop's next pass avoids a Syncthing 1.19 race in which
    // a folder re-shared right after its creation exchanges no index with peers already connected.
    alsoShareWith: await projectDeviceIds({client: options.client, projectCidr: manifest.cidr}),
  })
  return {...result, project: manifest.project, skippedPeers: manifest.peers.filter((peer) => !peer.syncthingId).map((peer) => peer.name)}
}
