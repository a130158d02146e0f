import { defineConfig } from 'tsup';

// clean: false — dist/ also holds the emscripten output written by scripts/build-wasm.sh.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: false,
  target: 'node20',
  external: [/twinfer-wasm\.mjs$/],
});
