import { describe, expect, it } from 'vitest';
import { TwinferError } from '../errors.js';
import { validateGenerationConfig } from './validate.js';
import { createSampler } from './sampler.js';

function errorOf(fn: () => unknown): TwinferError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TwinferError);
    return e as TwinferError;
  }
  throw new Error('expected a TwinferError');
}

describe('validateGenerationConfig', () => {
  const bad: Array<[string, Record<string, unknown>, string]> = [
    ['temperature', { temperature: -0.1 }, '-0.1'],
    ['temperature', { temperature: NaN }, 'NaN'],
    ['topP', { topP: 0 }, '0'],
    ['topP', { topP: 1.5 }, '1.5'],
    ['topK', { topK: -1 }, '-1'],
    ['topK', { topK: 2.5 }, '2.5'],
    ['minP', { minP: -0.01 }, '-0.01'],
    ['minP', { minP: 1.01 }, '1.01'],
    ['maxNewTokens', { maxNewTokens: -1 }, '-1'],
    ['maxNewTokens', { maxNewTokens: 3.5 }, '3.5'],
    ['maxNewTokens', { maxNewTokens: '10' }, '"10"'],
    ['repetitionPenalty', { repetitionPenalty: 0 }, '0'],
    ['repetitionPenalty', { repetitionPenalty: -1 }, '-1'],
    ['seed', { seed: -3 }, '-3'],
    ['seed', { seed: 1.5 }, '1.5'],
    ['logprobs', { logprobs: -1 }, '-1'],
    ['stop', { stop: [''] }, '""'],
    ['repetitionLastN', { repetitionLastN: -2 }, '-2'],
  ];
  for (const [field, cfg, shown] of bad) {
    it(`rejects ${field} = ${shown}`, () => {
      const e = errorOf(() => validateGenerationConfig(cfg));
      expect(e.code).toBe('E_INVALID_ARGUMENT');
      expect(e.message).toContain(field);
      expect(e.message).toContain(shown);
      expect(e.details?.field).toBe(field.startsWith('stop') ? 'stop[0]' : field);
    });
  }

  it('accepts the edges of every range', () => {
    const ok = { temperature: 0, topP: 1, topK: 0, minP: 1, maxNewTokens: 0, repetitionPenalty: 0.5, seed: 0, logprobs: 0, stop: ['x'] };
    expect(validateGenerationConfig(ok)).toBe(ok);
    expect(validateGenerationConfig({ minP: 0, topP: 1e-9 })).toBeTruthy();
    expect(validateGenerationConfig(undefined)).toBeUndefined();
  });

  it('createSampler validates too', () => {
    expect(errorOf(() => createSampler({ topP: 2 }, 10)).code).toBe('E_INVALID_ARGUMENT');
    expect(errorOf(() => createSampler({}, 0)).code).toBe('E_INVALID_ARGUMENT');
  });
});
