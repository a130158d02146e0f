/**
 * The paged KV cache's physical blocks, as vLLM keeps them: a free list plus reference counts, so a block can be
 * shared by several sequences (a common prompt prefix) and is reused only when the last holder lets go.
 */
import { TwinferError } from '../errors.js';

export class BlockAllocator {
  private readonly refs: Int32Array;
  private readonly freeList: number[];

  constructor(readonly nBlocks: number) {
    this.refs = new Int32Array(nBlocks);
    // Pop from the end: lowest ids first, which keeps a single sequence's blocks contiguous.
    this.freeList = Array.from({ length: nBlocks }, (_, i) => nBlocks - 1 - i);
  }

  get freeBlocks(): number {
    return this.freeList.length;
  }

  allocate(): number {
    const id = this.freeList.pop();
    if (id === undefined) {
      throw new TwinferError('E_KV_CACHE_FULL', `KV cache is full (${this.nBlocks} blocks in use)`, { nBlocks: this.nBlocks });
    }
    this.refs[id] = 1;
    return id;
  }

  retain(id: number): void {
    if (this.refs[id] <= 0) throw new TwinferError('E_INTERNAL', `retain of free KV block ${id}`);
    this.refs[id]++;
  }

  release(id: number): void {
    if (this.refs[id] <= 0) throw new TwinferError('E_INTERNAL', `double release of KV block ${id}`);
    if (--this.refs[id] === 0) this.freeList.push(id);
  }

  refCount(id: number): number {
    return this.refs[id];
  }
}
