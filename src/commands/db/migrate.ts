import {ControlPlaneCommand} from '../../base-command.js'
import type {MigrationResult} from '../../lib/store/migrate.js'
import {type Backend, migrateBackend} from '../../lib/store/open.js'

export default class DbMigrate extends ControlPlaneCommand<typeof DbMigrate> {
  static override summary = 'Apply pending control-plane migrations.'
  static override description = `Brings the configured backend (embedded, or Postgres with --database-url) to this build's schema. Safe to run again and from several places at once. The embedded backend is migrated automatically; a shared Postgres database (including Supabase's direct connection) is migrated only by this command.`
  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> --database-url postgres://vidsync@db.example.org/vidsync',
  ]

  async run(): Promise<MigrationResult & {backend: Backend}> {
    const result = await this.progress('Migrating the database', () => migrateBackend(this.storeOptions))
    for (const migration of result.applied) this.log(`applied ${migration.name}`)
    this.log(`The ${result.backend} database is at schema version ${result.version}.`)
    return result
  }
}
