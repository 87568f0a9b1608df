/**
 * The IOMMU's translation cache: a bounded set of IOVA page -> PTE copies
 * the hardware consults before walking the table. Entries are copies, so an
 * entry outlives a cleared PTE until it is invalidated: that is the window
 * lazy mode accepts (drivers/iommu/intel/cache.c, qi_flush_iotlb()).
 *
 * @module
 */

import { type DmaPte, packPte, unpackPte } from "./io_pgtable.ts";

/** Default IOTLB capacity (entries). */
export const IOTLB_DEFAULT_ENTRIES = 128;
/** Largest IOTLB we model. */
export const IOTLB_MAX_ENTRIES = 1 << 16;

/** No slot (end of the recency list). */
const NIL = -1;

/**
 * A least-recently-used cache of translations: a map from IOVA page to slot,
 * and the slots in a doubly linked recency list (least recently used at the
 * head), so a hit costs one map lookup and a few index moves.
 */
export class Iotlb {
  /** Capacity in entries. */
  readonly capacity: number;
  /** IOVA page -> slot. */
  readonly #slot = new Map<number, number>();
  /** Per slot: its IOVA page, its leaf (packed, io_pgtable.ts packPte), its neighbours. */
  readonly #key: Float64Array;
  readonly #val: Float64Array;
  readonly #prev: Int32Array;
  readonly #next: Int32Array;
  #head = NIL;
  #tail = NIL;
  /** Slots never used or freed by an invalidation. */
  readonly #free: number[] = [];
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
    this.#key = new Float64Array(capacity);
    this.#val = new Float64Array(capacity);
    this.#prev = new Int32Array(capacity);
    this.#next = new Int32Array(capacity);
    for (let i = capacity - 1; i >= 0; i--) this.#free.push(i);
  }

  /** Entries held. */
  get size(): number {
    return this.#slot.size;
  }

  /** Whether an IOVA page is cached (no LRU update, no hit count). */
  has(iovaPfn: number): boolean {
    return this.#slot.has(iovaPfn);
  }

  /** Look up an IOVA page; a hit becomes most recently used. */
  lookup(iovaPfn: number): DmaPte | undefined {
    const e = this.lookupPacked(iovaPfn);
    return e < 0 ? undefined : unpackPte(e);
  }

  /** {@link Iotlb.lookup} without allocation: the packed leaf, or -1 on a miss. */
  lookupPacked(iovaPfn: number): number {
    const i = this.#slot.get(iovaPfn);
    if (i === undefined) {
      this.misses++;
      return -1;
    }
    this.hits++;
    this.#unlink(i);
    this.#append(i);
    return this.#val[i];
  }

  /** Cache a translation after a walk, evicting the least recently used entry when full. */
  fill(iovaPfn: number, pte: DmaPte): void {
    this.fillPacked(iovaPfn, packPte(pte.pfn, pte.prot));
  }

  /** {@link Iotlb.fill} with a packed leaf. */
  fillPacked(iovaPfn: number, e: number): void {
    let i = this.#slot.get(iovaPfn);
    if (i !== undefined) {
      this.#unlink(i);
    } else {
      if (this.#slot.size >= this.capacity) {
        const oldest = this.#head;
        this.#unlink(oldest);
        this.#slot.delete(this.#key[oldest]);
        this.#free.push(oldest);
        this.evictions++;
      }
      i = this.#free.pop()!;
      this.#key[i] = iovaPfn;
      this.#slot.set(iovaPfn, i);
    }
    this.#val[i] = e;
    this.#append(i);
  }

  /** Page-selective invalidation of `npages` pages from `iovaPfn`; entries dropped. */
  invalidateRange(iovaPfn: number, npages: number): number {
    let n = 0;
    if (npages > this.#slot.size) {
      for (const k of [...this.#slot.keys()]) {
        if (k >= iovaPfn && k < iovaPfn + npages) n += this.#drop(k);
      }
    } else {
      for (let i = 0; i < npages; i++) n += this.#drop(iovaPfn + i);
    }
    return n;
  }

  /** Global invalidation. */
  flushAll(): void {
    for (const k of [...this.#slot.keys()]) this.#drop(k);
  }

  /** Remove one entry; 1 if it was cached. */
  #drop(iovaPfn: number): number {
    const i = this.#slot.get(iovaPfn);
    if (i === undefined) return 0;
    this.#unlink(i);
    this.#slot.delete(iovaPfn);
    this.#free.push(i);
    return 1;
  }

  #unlink(i: number): void {
    const p = this.#prev[i];
    const n = this.#next[i];
    if (p === NIL) this.#head = n;
    else this.#next[p] = n;
    if (n === NIL) this.#tail = p;
    else this.#prev[n] = p;
  }

  #append(i: number): void {
    this.#prev[i] = this.#tail;
    this.#next[i] = NIL;
    if (this.#tail === NIL) this.#head = i;
    else this.#next[this.#tail] = i;
    this.#tail = i;
  }
}
