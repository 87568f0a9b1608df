/**
 * The IOMMU's translation cache: a bounded set of IOVA page -> PTE copies
 * the hardware consults before walking the table. Entries are copies, so an
 * entry outlives a cleared PTE until it is invalidated: that is the window
 * lazy mode accepts (drivers/iommu/intel/cache.c, qi_flush_iotlb()).
 *
 * @module
 */

import type { DmaPte } from "./io_pgtable.ts";

/** Default IOTLB capacity (entries). */
export const IOTLB_DEFAULT_ENTRIES = 128;
/** Largest IOTLB we model. */
export const IOTLB_MAX_ENTRIES = 1 << 16;

/** A least-recently-used cache of translations. */
export class Iotlb {
  /** Capacity in entries. */
  readonly capacity: number;
  readonly #entries = new Map<number, DmaPte>();
  /** Lookups that hit. */
  hits = 0;
  /** Lookups that missed. */
  misses = 0;
  /** Entries evicted for capacity. */
  evictions = 0;

  /** An empty IOTLB of `capacity` entries. */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > IOTLB_MAX_ENTRIES) {
      throw new RangeError(`iotlb: bad capacity ${capacity} (1..${IOTLB_MAX_ENTRIES})`);
    }
    this.capacity = capacity;
  }

  /** Entries held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Whether an IOVA page is cached (no LRU update, no hit count). */
  has(iovaPfn: number): boolean {
    return this.#entries.has(iovaPfn);
  }

  /** Look up an IOVA page; a hit becomes most recently used. */
  lookup(iovaPfn: number): DmaPte | undefined {
    const e = this.#entries.get(iovaPfn);
    if (e === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.#entries.delete(iovaPfn);
    this.#entries.set(iovaPfn, e);
    return e;
  }

  /** Cache a translation after a walk, evicting the least recently used entry when full. */
  fill(iovaPfn: number, pte: DmaPte): void {
    this.#entries.delete(iovaPfn);
    if (this.#entries.size >= this.capacity) {
      const oldest = this.#entries.keys().next().value as number;
      this.#entries.delete(oldest);
      this.evictions++;
    }
    this.#entries.set(iovaPfn, { pfn: pte.pfn, prot: pte.prot });
  }

  /** Page-selective invalidation of `npages` pages from `iovaPfn`; entries dropped. */
  invalidateRange(iovaPfn: number, npages: number): number {
    let n = 0;
    if (npages > this.#entries.size) {
      for (const k of [...this.#entries.keys()]) {
        if (k >= iovaPfn && k < iovaPfn + npages) n += this.#entries.delete(k) ? 1 : 0;
      }
    } else {
      for (let i = 0; i < npages; i++) n += this.#entries.delete(iovaPfn + i) ? 1 : 0;
    }
    return n;
  }

  /** Global invalidation. */
  flushAll(): void {
    this.#entries.clear();
  }
}
