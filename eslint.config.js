import js from '@eslint/js'
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
  {files: ['bench/**/*.ts', 'bin/**/*.js'], rules: {'no-console': 'off'}},
  {files: ['bin/**/*.js'], languageOptions: {globals: {process: 'readonly'}}},
  // Mocha loads its reporters with require().
  {
    files: ['**/*.cjs'],
    languageOptions: {sourceType: 'commonjs', globals: {require: 'readonly', module: 'writable', console: 'readonly'}},
    rules: {'@typescript-eslint/no-require-imports': 'off'},
  },
)
