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


/**
 * Answers the win32 platform's ACL check, `powershell.exe ... -Command "'<file>','<folder>' |
 * ForEach-Object { (Get-Acl -LiteralPath $_).Sddl }"`, from recorded SDDL (one line per path, as
 * PowerShell prints them); a path without one fails as Get-Acl does for a missing path. Undefined
 * for any other program.
 */
export function getAclAnswer(argv: string[], sddlOf: (path: string) => string | undefined): ProgramResult | undefined {
  const command = argv[0] === 'powershell.exe' ? (argv.at(-1) ?? '') : ''
  if (!command.includes('Get-Acl')) return undefined
  const paths = [...(command.split('|')[0] ?? '').matchAll(/'((?:[^']|'')*)'/g)].map((match) => (match[1] ?? '').replaceAll("''", "'"))
  const lines = paths.map((path) => sddlOf(path)?.trim())
  const missing = paths.find((_, index) => lines[index] === undefined)
  const stdout = lines.filter((line) => line !== undefined).map((line) => `${line}\r\n`).join('')
  if (missing !== undefined) return {stdout, stderr: `Get-Acl : Cannot find path '${missing}' because it does not exist.`, exitCode: 1, missing: false}
  return {stdout, stderr: '', exitCode: 0, missing: false}
}
