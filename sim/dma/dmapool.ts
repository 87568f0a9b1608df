/**
 * DMA pools (mm/dmapool.c): small fixed-size blocks carved from coherent
 * pages, each block aligned to `align` and never crossing a `boundary`
 * (nvme-pci's PRP list pages and 256-byte small PRP lists come from here).
 *
 * @module
 */

import { COUNTER, type Stats } from "../stats.ts";
import { PAGE_SIZE } from "../memory/phys.ts";
import type { CoherentBuffer, DmaPool, DmaPoolBlock } from "./types.ts";

/** Upper bound on pages one pool may grow to (a limit, not a kernel constant): 64 MiB. */
export const DMA_POOL_MAX_PAGES = 16384;
/** Smallest block: sizeof(struct dma_block) on 64-bit. */
const DMA_BLOCK_MIN = 16;
/** INT_MAX, dma_pool_create()'s bound on size. */
const INT_MAX = 0x7fff_ffff;

/** Where a pool gets and returns its coherent pages. */
export interface PoolBackend {
  /** dma_alloc_coherent() */
  allocCoherent(size: number): CoherentBuffer | null;
  /** dma_free_coherent() */
  freeCoherent(buf: CoherentBuffer): void;
}

interface PoolBlock {
  block: DmaPoolBlock;
  free: boolean;
}

/** Validated geometry of a pool (the checks and rounding of dma_pool_create()). */
export interface PoolGeometry {
  /** Block size after rounding. */
  size: number;
  /** Bytes per pool page allocation. */
  allocation: number;
  /** Boundary no block crosses. */
  boundary: number;
}

/** dma_pool_create()'s argument checks; a reason string where the kernel returns NULL. */
export function poolGeometry(size: number, align: number, boundary: number): PoolGeometry | string {
  if (!Number.isInteger(size) || !Number.isInteger(align) || !Number.isInteger(boundary)) {
    return "size, align and boundary must be integers";
  }
  if (align === 0) align = 1;
  else if (align < 0 || (align & (align - 1)) !== 0) return `align ${align} is not a power of 2`;
  if (size <= 0 || size > INT_MAX) return `size ${size} out of range`;
  if (size < DMA_BLOCK_MIN) size = DMA_BLOCK_MIN;
  size = Math.ceil(size / align) * align;
  const allocation = Math.max(size, PAGE_SIZE);
  if (allocation > PAGE_SIZE * 1024) return `size ${size} larger than a 4 MiB allocation`;
  if (boundary === 0) boundary = allocation;
  else if (boundary < 0 || boundary < size || (boundary & (boundary - 1)) !== 0) {
    return `boundary ${boundary} smaller than size ${size} or not a power of 2`;
  }
  return { size, allocation, boundary: Math.min(boundary, allocation) };
}

/** struct dma_pool */
export class DmaPoolImpl implements DmaPool, Disposable {
  /** Pool name. */
  readonly name: string;
  /** Block size (after dma_pool_create's rounding). */
  readonly size: number;
  /** Boundary no block crosses. */
  readonly boundary: number;
  readonly #allocation: number;
  readonly #backend: PoolBackend;
  readonly #stats: Stats;
  readonly #maxPages: number;
  readonly #pages: CoherentBuffer[] = [];
  readonly #free: PoolBlock[] = [];
  readonly #byDma = new Map<bigint, PoolBlock>();
  #inUse = 0;
  #destroyed = false;

  /** dma_pool_create(); throws RangeError where the kernel returns NULL. */
  constructor(
    backend: PoolBackend,
    stats: Stats,
    name: string,
    size: number,
    align: number,
    boundary: number,
    maxPages = DMA_POOL_MAX_PAGES,
  ) {
    const g = poolGeometry(size, align, boundary);
    if (typeof g === "string") throw new RangeError(`dma_pool_create(${name}): ${g}`);
    this.name = name;
    this.size = g.size;
    this.boundary = g.boundary;
    this.#allocation = g.allocation;
    this.#backend = backend;
    this.#stats = stats;
    this.#maxPages = maxPages;
  }

  /** Blocks handed out. */
  get inUse(): number {
    return this.#inUse;
  }

  /** Pool pages allocated so far. */
  get pages(): number {
    return this.#pages.length;
  }

  /** dma_pool_alloc(): a block, or null when no page can be added. */
  alloc(): DmaPoolBlock | null {
    if (this.#destroyed) throw new Error(`dma_pool_alloc(${this.name}): pool destroyed`);
    if (this.#free.length === 0 && !this.#grow()) return null;
    const b = this.#free.pop()!;
    if (!b.free) throw new Error(`dma_pool_alloc(${this.name}): free list holds a busy block`);
    b.free = false;
    this.#inUse++;
    this.#stats.add(COUNTER.bytesAllocated, this.size);
    return b.block;
  }

  /** dma_pool_free(); freeing a block twice or one from elsewhere is a bug (thrown). */
  free(block: DmaPoolBlock): void {
    const b = this.#byDma.get(block.dma);
    if (!b || b.block.cpu !== block.cpu) {
      throw new Error(`dma_pool_free(${this.name}): 0x${block.dma.toString(16)} not from pool`);
    }
    if (b.free) {
      throw new Error(`dma_pool_free(${this.name}): 0x${block.dma.toString(16)} already free`);
    }
    b.free = true;
    this.#free.push(b);
    this.#inUse--;
  }

  /** dma_pool_destroy(): blocks still in use are a driver bug (thrown). */
  [Symbol.dispose](): void {
    if (this.#destroyed) return;
    if (this.#inUse !== 0) {
      throw new Error(`dma_pool_destroy(${this.name}): ${this.#inUse} blocks still in use`);
    }
    this.release();
  }

  /** Device teardown: give every page back, blocks in use or not; the pool is dead after. */
  release(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const p of this.#pages) this.#backend.freeCoherent(p);
    this.#pages.length = 0;
    this.#free.length = 0;
    this.#byDma.clear();
  }

  /** pool_initialise_page(): carve a new page into blocks, skipping boundary crossings. */
  #grow(): boolean {
    if (this.#pages.length >= this.#maxPages) return false;
    const page = this.#backend.allocCoherent(this.#allocation);
    if (!page) return false;
    this.#pages.push(page);
    const carved: PoolBlock[] = [];
    let offset = 0;
    let nextBoundary = this.boundary;
    while (offset + this.size <= this.#allocation) {
      if (offset + this.size > nextBoundary) {
        offset = nextBoundary;
        nextBoundary += this.boundary;
        continue;
      }
      const block = {
        cpu: page.cpu.subarray(offset, offset + this.size),
        dma: page.dma + BigInt(offset),
      };
      const b = { block, free: true };
      this.#byDma.set(block.dma, b);
      carved.push(b);
      offset += this.size;
    }
    // Hand out low addresses first, as the kernel's free list does after init.
    for (let i = carved.length - 1; i >= 0; i--) this.#free.push(carved[i]);
    return true;
  }
}
