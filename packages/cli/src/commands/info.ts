/** `twinfer info`: which backends can run here (and why not), and what a model file holds, read from its header. */
import os from 'node:os';
import { Command, Option } from 'commander';
import { inspectModel, listBackends, VERSION, type ModelInfo } from '@twinfer/sdk';
import { intParser } from '../options.js';
import { formatBytes, formatCount, printJson, table, writeOut } from '../output.js';

interface InfoFlags {
  model?: string;
  ctx?: number;
  json?: boolean;
}

export function infoCommand(): Command {
  return new Command('info')
    .description('show available backends (and why one is not), and for --model: architecture, parameters, tensor types, sizes')
    .option('-m, --model <file>', 'GGUF model file to describe (reads the header only)')
    .addOption(new Option('--ctx <n>', 'context size for the KV-cache estimate (default: the size a load would use)').argParser(intParser('--ctx', 1, 1 << 24)))
    .option('--json', 'print one JSON object')
    .action(async (flags: InfoFlags) => {
      const backends = await listBackends();
      const model = flags.model ? await inspectModel(flags.model) : undefined;
      const memory = model ? estimateMemory(model, flags.ctx ?? model.contextSize) : undefined;
      const host = { version: VERSION, node: process.version, platform: `${process.platform} ${process.arch}`, cpus: os.availableParallelism() };
      if (flags.json) {
        await printJson({ ...host, backends, ...(model ? { model: { ...model, memory } } : {}) });
        return;
      }
      const lines: string[] = [`twinfer ${VERSION} (node ${host.node}, ${host.platform}, ${host.cpus} cores)`, '', 'backends:'];
      for (const b of backends) {
        lines.push(`  ${b.name.padEnd(5)} ${b.available ? 'available  ' : 'unavailable'}  ${b.reason}`);
        for (const d of b.devices ?? []) {
          lines.push(`        device: ${d.name}, ${formatBytes(d.memoryBytes)}${d.computeCapability ? `, compute ${d.computeCapability}` : ''}`);
        }
      }
      if (model && memory) {
        lines.push('', `model: ${model.path}`);
        const types = Object.entries(model.tensorTypes).sort((a, b) => b[1] - a[1]).map(([t, n]) => `${t} x${n}`).join(', ');
        const rows: string[][] = [
          ['architecture', model.architecture],
          ...(model.name ? [['name', model.name]] : []),
          ['parameters', `${formatCount(model.parameters)} (${model.parameters})`],
          ['tensor types', types],
          ['layers', String(model.layers)],
          ['embedding', String(model.embeddingLength)],
          ['heads', `${model.heads} (${model.kvHeads} KV)`],
          ['feed-forward', String(model.feedForwardLength)],
          ['vocabulary', String(model.vocabSize)],
          ['trained context', String(model.trainedContext)],
          ['file size', `${formatBytes(model.fileBytes)} (${model.fileBytes} bytes)`],
          ['weights', formatBytes(memory.weightBytes)],
          [`KV cache (f16, ctx ${memory.ctx})`, formatBytes(memory.kvCacheBytes)],
          ['memory (weights + KV)', formatBytes(memory.totalBytes)],
        ];
        lines.push(table(rows.map((r) => ['  ' + r[0]!, r[1]!])));
      }
      await writeOut(lines.join('\n') + '\n');
    });
}

/**
 * What loading the model would hold: the weights as stored (the backends keep the GGUF types) plus an F32 KV cache
 * of `ctx` tokens in the default F16 cache: 2 (K and V) x layers x ctx x kvHeads x headDim x 2 bytes. Scratch buffers are not counted.
 */
function estimateMemory(m: ModelInfo, ctx: number): { ctx: number; weightBytes: number; kvCacheBytes: number; totalBytes: number } {
  const headDim = m.heads > 0 ? m.embeddingLength / m.heads : 0;
  const kvCacheBytes = 2 * m.layers * ctx * m.kvHeads * headDim * 2;
  return { ctx, weightBytes: m.weightBytes, kvCacheBytes, totalBytes: m.weightBytes + kvCacheBytes };
}
