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
  // What the published package runs must be a dependency: `npm install vidsync` leaves out devDependencies.
  // Type-only imports are erased at build time and may come from devDependencies (@types/*).
  {
    files: ['src/**/*.ts', 'bin/run.js'],
    plugins: {'import-x': importX},
    rules: {'import-x/no-extraneous-dependencies': ['error', {devDependencies: false, optionalDependencies: false, peerDependencies: false}]},
  },
  {files: ['bench/**/*.ts', 'bin/**/*.js'], rules: {'no-console': 'off'}},
  {files: ['bin/**/*.js'], languageOptions: {globals: {process: 'readonly'}}},
  // Mocha loads its reporters with require().
  {
    files: ['**/*.cjs'],
    languageOptions: {sourceType: 'commonjs', globals: {require: 'readonly', module: 'writable', console: 'readonly'}},
    rules: {'@typescript-eslint/no-require-imports': 'off'},
  },
)
