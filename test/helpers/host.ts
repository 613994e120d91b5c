import type {HostDeps, ProgramResult} from '../../src/lib/platform/types.js'

/** A host whose programs answer from recorded outputs; every call is kept to check the argv. */
export function fakeHost(answers: (argv: string[]) => ProgramResult, overrides: Partial<HostDeps> = {}): HostDeps & {calls: string[][]} {
  const calls: string[][] = []
  const run = (file: string, args: string[]) => {
    calls.push([file, ...args])
    return answers([file, ...args])
  }
  return {
    env: {},
    homedir: () => '/Users/alice',
    userName: () => 'alice',
    uid: 501,
    gid: 20,
    run: async (file, args) => run(file, args),
    runSync: run,
    readFile: async () => undefined,
    readFileSync: () => undefined,
    exists: async () => false,
    chmod: async () => undefined,
    fileMode: async () => undefined,
    fileOwner: async () => undefined,
    realPath: async (path) => path,
    signal: () => 'gone',
    interfaces: () => ({}),
    cpuCount: 2,
    calls,
    ...overrides,
  }
}

