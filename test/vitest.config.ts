import { defineConfig } from 'vitest/config';

// End-to-end tests share the two CPU cores with the engine's thread pool: run files one at a time.
export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 600_000,
  },
});
