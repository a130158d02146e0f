// Builds the CUDA addon with cmake-js where nvcc exists; otherwise prints one line and succeeds, so installs and
// builds on machines without CUDA never fail (the SDK then reports why CUDA is unavailable and uses WebAssembly).
// TWINFER_CUDA_STRICT=1 turns a failed compile into a failed build (CI of the CUDA package itself, GPU machines).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { createRequire } from 'node:module';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(pkg, 'package.json'));
const strict = process.env.TWINFER_CUDA_STRICT === '1';

function findNvcc() {
  const candidates = [];
  if (process.env.CUDACXX) candidates.push(process.env.CUDACXX);
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir) candidates.push(join(dir, 'nvcc'));
  if (process.env.CUDA_PATH) candidates.push(join(process.env.CUDA_PATH, 'bin', 'nvcc'));
  candidates.push('/usr/local/cuda/bin/nvcc');
  return candidates.find((c) => existsSync(c));
}

function skip(reason) {
  console.log(`@twinfer/core-cuda: ${reason}; skipping the CUDA addon (the SDK falls back to WebAssembly)`);
  process.exit(0);
}

if (process.env.TWINFER_SKIP_CUDA === '1') skip('TWINFER_SKIP_CUDA=1');
const nvcc = findNvcc();
if (!nvcc) skip('nvcc not found');

let cmakeJs;
try {
  cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
} catch {
  skip('cmake-js is not installed');
}
const cmake = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
if (cmake.status !== 0) skip('cmake not found');

const jobs = String(Math.max(1, Math.min(cpus().length, 16)));
const args = [cmakeJs, 'build', '--directory', pkg, '--out', join(pkg, 'build'), '--parallel', jobs,
  `--CDCMAKE_CUDA_COMPILER=${nvcc}`, '--CDTWINFER_CUDA_TESTS=OFF'];
if (process.env.CMAKE_CUDA_ARCHITECTURES) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.CMAKE_CUDA_ARCHITECTURES}`);
console.log(`@twinfer/core-cuda: building the CUDA addon with ${nvcc} (${jobs} jobs)`);
const r = spawnSync(process.execPath, args, { cwd: pkg, encoding: 'utf8', maxBuffer: 1 << 28 });
mkdirSync(join(pkg, 'build'), { recursive: true });
writeFileSync(join(pkg, 'build', 'build.log'), `${r.stdout ?? ''}\n${r.stderr ?? ''}`);
const built = join(pkg, 'build', 'Release', 'twinfer_cuda.node');
if (r.status !== 0 || !existsSync(built)) {
  const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').filter((l) => /error/i.test(l)).slice(0, 5).join('\n');
  if (strict) {
    console.error(tail);
    console.error('@twinfer/core-cuda: CUDA build failed (build/build.log)');
    process.exit(1);
  }
  skip(`the CUDA build failed (see packages/core-cuda/build/build.log)${tail ? `:\n${tail}` : ''}`);
}
mkdirSync(join(pkg, 'dist'), { recursive: true });
copyFileSync(built, join(pkg, 'dist', 'twinfer_cuda.node'));
console.log('@twinfer/core-cuda: built dist/twinfer_cuda.node');
