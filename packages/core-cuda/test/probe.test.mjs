// The package must load and answer probe() on every machine: with no addon, no driver or no GPU it reports why.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import core, { CoreError, probe, typeSupported } from '../index.js';

test('probe answers without throwing and explains unavailability', () => {
  const p = probe();
  assert.equal(typeof p.available, 'boolean');
  assert.equal(typeof p.reason, 'string');
  assert.ok(p.reason.length > 0);
  if (p.available) {
    assert.ok(Array.isArray(p.devices) && p.devices.length > 0);
    for (const d of p.devices) {
      assert.equal(typeof d.name, 'string');
      assert.ok(d.memoryBytes > 0);
      assert.match(d.computeCapability, /^\d+\.\d+$/);
    }
  }
  assert.equal(core.name, 'cuda');
});

test('createEngine without a usable device throws a CoreError, never crashes', () => {
  if (probe().available) return;
  const hp = { arch: 0, nVocab: 32, nEmbd: 64, nLayer: 1, nHead: 8, nHeadKv: 4, headDim: 8, nFf: 128, nCtxTrain: 64,
    ropeMode: 0, ropeTheta: 10000, ropeFreqScale: 1, rmsEps: 1e-5 };
  const rc = { nThreads: 1, kvType: 1, kvBlockSize: 16, kvBlocks: 4, maxBatchTokens: 8, maxOutputs: 1, device: 0, flags: 0 };
  assert.throws(() => core.createEngine(hp, rc), (e) => e instanceof CoreError && typeof e.coreCode === 'number');
});

test('typeSupported is false-safe', () => {
  assert.equal(typeof typeSupported(2), 'boolean');
});
