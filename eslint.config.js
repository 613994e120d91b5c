import js from '@eslint/js'
import {importX} from 'eslint-plugin-import-x'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  {ignores: ['dist/**', 'node_modules/**', 'tmp/**']},
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', {argsIgnorePattern: '^_'}],
      'no-console': 'error',
    },
  },
  // Everything OS-specific lives in src/lib/platform/ (DESIGN.md, "Devices on every OS").
  {
    files: ['src/**/*.ts'],
    ignores: ['src/lib/platform/**'],
    rules: {
      'no-restricted-properties': [
        'error',
        {object: 'process', property: 'platform', message: 'OS checks belong in src/lib/platform/: use currentPlatform().'},
        {object: 'process', property: 'getuid', message: 'privilege checks belong in src/lib/platform/.'},
        {object: 'process', property: 'geteuid', message: 'privilege checks belong in src/lib/platform/.'},
        {object: 'process', property: 'getgid', message: 'user lookups belong in src/lib/platform/.'},
        {object: 'process', property: 'kill', message: 'signals belong in src/lib/platform/ (terminate, reloadNebula).'},
      ],
      'no-restricted-syntax': [
        'error',
        {selector: "Literal[value=/^\\/proc(\\/|$)/]", message: '/proc belongs in src/lib/platform/linux.ts.'},
        {selector: "TemplateElement[value.raw=/^\\/proc(\\/|$)/]", message: '/proc belongs in src/lib/platform/linux.ts.'},
        {
          selector: "CallExpression[callee.object.name='process'][callee.property.name=/^(on|once|off|addListener|removeListener|prependListener)$/] > Literal:first-child[value=/^SIG/]",
          message: 'signals belong in src/lib/platform/: use stopOnRequest() or currentPlatform().onServiceRequests().',
        },
      ],
    },
  },
  // What the published package runs must be a dependency: `npm install vidsync` leaves out devDependencies.
  // Type-only imports are erased at build time and may come from devDependencies (@types/*).
  {
    files: ['src/**/*.ts', 'bin/run.js'],
    plugins: {'import-x': importX},
    rules: {'import-x/no-extraneous-dependencies': ['error', {devDependencies: false, optionalDependencies: false, peerDependencies: false}]},
  },
  {files: ['bench/**/*.ts', 'bin/**/*.js'], rules: {'no-console': 'off'}},
  {files: ['bin/**/*.js'], languageOptions: {globals: {process: 'readonly'}}},
  {files: ['scripts/**/*.js'], languageOptions: {globals: {console: 'readonly'}}},
  // Mocha loads its reporters with require().
  {
    files: ['**/*.cjs'],
    languageOptions: {sourceType: 'commonjs', globals: {require: 'readonly', module: 'writable', console: 'readonly', process: 'readonly'}},
    rules: {'@typescript-eslint/no-require-imports': 'off'},
  },
)
