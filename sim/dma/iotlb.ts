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

/** No slot (end of the recency list, or an empty bucket). */
const NIL = -1;

/**
 * A least-recently-used cache of translations: an open-addressing hash from
 * IOVA page to slot (IOVA page numbers are beyond small integers, which a
 * `Map` would box), and the slots in a doubly linked recency list (least
 * recently used at the head), so a hit costs a probe or two and a few index
 * moves, and nothing is allocated after construction.
 */
export class Iotlb {
  /** Capacity in entries. */
  readonly capacity: number;
  /** Buckets: the slot holding each bucket's page, or NIL (linear probing, load <= 1/4). */
  readonly #bucket: Int32Array;
  readonly #mask: number;
  /** Per slot: its IOVA page, its leaf (packed, io_pgtable.ts packPte), its neighbours. */
  readonly #key: Float64Array;
  readonly #val: Float64Array;
  readonly #prev: Int32Array;
  readonly #next: Int32Array;
  #head = NIL;
  #tail = NIL;
  #size = 0;
  /** Slots never used or freed by an invalidation. */
  readonly #free: Int32Array;
  #nfree: number;
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
    let buckets = 4;
    while (buckets < 4 * capacity) buckets *= 2;
    this.#bucket = new Int32Array(buckets).fill(NIL);
    this.#mask = buckets - 1;
    this.#key = new Float64Array(capacity);
    this.#val = new Float64Array(capacity);
    this.#prev = new Int32Array(capacity);
    this.#next = new Int32Array(capacity);
    this.#free = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.#free[i] = capacity - 1 - i;
    this.#nfree = capacity;
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** Whether an IOVA page is cached (no LRU update, no hit count). */
  has(iovaPfn: number): boolean {
    return this.#find(iovaPfn) !== NIL;
  }

  /** Look up an IOVA page; a hit becomes most recently used. */
  lookup(iovaPfn: number): DmaPte | undefined {
    const e = this.lookupPacked(iovaPfn);
    return e < 0 ? undefined : unpackPte(e);
  }

  /** {@link Iotlb.lookup} without allocation: the packed leaf, or -1 on a miss. */
  lookupPacked(iovaPfn: number): number {
    const b = this.#find(iovaPfn);
    if (b === NIL) {
      this.misses++;
      return -1;
    }
    this.hits++;
    const i = this.#bucket[b];
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
    const b = this.#find(iovaPfn);
    let i: number;
    if (b !== NIL) {
      i = this.#bucket[b];
      this.#unlink(i);
    } else {
      if (this.#size >= this.capacity) {
        const oldest = this.#head;
        this.#remove(this.#find(this.#key[oldest]));
        this.evictions++;
      }
      i = this.#free[--this.#nfree];
      this.#key[i] = iovaPfn;
      this.#insert(iovaPfn, i);
      this.#size++;
    }
    this.#val[i] = e;
    this.#append(i);
  }

  /** Page-selective invalidation of `npages` pages from `iovaPfn`; entries dropped. */
  invalidateRange(iovaPfn: number, npages: number): number {
    let n = 0;
    if (npages > this.#size) {
      // Walk the entries instead of the range (snapshot first: removal reorders the list).
      const keys: number[] = [];
      for (let i = this.#head; i !== NIL; i = this.#next[i]) keys.push(this.#key[i]);
      for (const k of keys) if (k >= iovaPfn && k < iovaPfn + npages) n += this.#drop(k);
    } else {
      for (let i = 0; i < npages; i++) n += this.#drop(iovaPfn + i);
    }
    return n;
  }

  /** Global invalidation. */
  flushAll(): void {
    while (this.#head !== NIL) this.#remove(this.#find(this.#key[this.#head]));
  }

  /** Remove one entry; 1 if it was cached. */
  #drop(iovaPfn: number): number {
    const b = this.#find(iovaPfn);
    if (b === NIL) return 0;
    this.#remove(b);
    return 1;
  }

  /** The bucket holding `iovaPfn`, or NIL. */
  #find(iovaPfn: number): number {
    let b = hash(iovaPfn) & this.#mask;
    for (;;) {
      const i = this.#bucket[b];
      if (i === NIL) return NIL;
      if (this.#key[i] === iovaPfn) return b;
      b = (b + 1) & this.#mask;
    }
  }

  #insert(iovaPfn: number, slot: number): void {
    let b = hash(iovaPfn) & this.#mask;
    while (this.#bucket[b] !== NIL) b = (b + 1) & this.#mask;
    this.#bucket[b] = slot;
  }

  /** Free bucket `b`'s slot and close the gap (backward-shift deletion, no tombstones). */
  #remove(b: number): void {
    const slot = this.#bucket[b];
    this.#unlink(slot);
    this.#free[this.#nfree++] = slot;
    this.#size--;
    const mask = this.#mask;
    let hole = b;
    let j = b;
    for (;;) {
      j = (j + 1) & mask;
      const s = this.#bucket[j];
      if (s === NIL) break;
      const home = hash(this.#key[s]) & mask;
      // Move s into the hole unless its home lies cyclically in (hole, j].
      const inRange = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!inRange) {
        this.#bucket[hole] = s;
        hole = j;
      }
    }
    this.#bucket[hole] = NIL;
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

/** Bucket hash of an IOVA page number (< 2^36): its low 32 bits, mixed. */
function hash(pfn: number): number {
  return Math.imul((pfn >>> 0) ^ ((pfn / 4294967296) >>> 0), 0x9e3779b1) >>> 7;
}
