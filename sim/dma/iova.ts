/**
 * IOVA allocator (drivers/iommu/iova.c): ranges of IOVA page frames kept
 * sorted (the kernel's rbtree), allocated top-down below a limit starting
 * from a cached node, size-aligned; plus the rcache: per-CPU magazines of
 * freed ranges for sizes up to 2^5 pages, with a depot of full magazines,
 * so most frees and allocations never touch the tree. One CPU is modelled.
 *
 * @module
 */

/** IOVA_RANGE_CACHE_MAX_SIZE: sizes of order below this (up to 32 pages) are cached. */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;
/** IOVA_MAG_SIZE: pfns per magazine. */
export const IOVA_MAG_SIZE = 127;
/** MAX_GLOBAL_MAGS: full magazines the depot keeps per size class. */
export const MAX_GLOBAL_MAGS = 32;
/** IOVA_ANCHOR: the sentinel node above every range. */
const IOVA_ANCHOR = Number.MAX_SAFE_INTEGER;

/** One allocated or reserved range of IOVA pfns (struct iova), inclusive. */
export interface IovaRange {
  /** First pfn. */
  readonly pfnLo: number;
  /** Last pfn. */
  readonly pfnHi: number;
}

/** Counters of the allocator's paths. */
export interface IovaStats {
  /** Allocations served from the rcache. */
  rcacheHits: number;
  /** Cacheable allocations the rcache could not serve. */
  rcacheMisses: number;
  /** Ranges inserted into the tree by allocation. */
  treeAllocs: number;
  /** Ranges removed from the tree. */
  treeFrees: number;
  /** Frees kept in the rcache. */
  rcacheInserts: number;
  /** Times the rcache was drained into the tree to retry a failed allocation. */
  rcacheFlushes: number;
}

/** struct iova_magazine */
class Magazine {
  readonly pfns: number[] = [];
  get full(): boolean {
    return this.pfns.length === IOVA_MAG_SIZE;
  }
  get empty(): boolean {
    return this.pfns.length === 0;
  }
  /** iova_magazine_pop(): the last pfn <= limit, or 0. */
  pop(limitPfn: number): number {
    let i = this.pfns.length - 1;
    for (; this.pfns[i] > limitPfn; i--) if (i === 0) return 0;
    const pfn = this.pfns[i];
    this.pfns[i] = this.pfns[this.pfns.length - 1];
    this.pfns.pop();
    return pfn;
  }
  push(pfn: number): void {
    if (this.full) throw new Error("iova_magazine_push: full");
    this.pfns.push(pfn);
  }
}

/** struct iova_rcache with its (single) struct iova_cpu_rcache. */
class Rcache {
  loaded = new Magazine();
  prev = new Magazine();
  readonly depot: Magazine[] = [];
}

/** order_base_2() */
function orderBase2(n: number): number {
  return n <= 1 ? 0 : Math.ceil(Math.log2(n));
}

/** roundup_pow_of_two() */
function roundupPowOfTwo(n: number): number {
  return 2 ** orderBase2(n);
}

/** struct iova_domain for 4 KiB granules. */
export class IovaDomain {
  /** Lowest allocatable pfn. */
  readonly startPfn: number;
  /** dma_32bit_pfn: first pfn above 4 GiB. */
  readonly dma32bitPfn = 1 << (32 - 12);
  /** Path counters. */
  readonly stats: IovaStats = {
    rcacheHits: 0,
    rcacheMisses: 0,
    treeAllocs: 0,
    treeFrees: 0,
    rcacheInserts: 0,
    rcacheFlushes: 0,
  };
  readonly #nodes: IovaRange[] = [];
  readonly #anchor: IovaRange = { pfnLo: IOVA_ANCHOR, pfnHi: IOVA_ANCHOR };
  #cachedNode: IovaRange;
  #cached32Node: IovaRange;
  #max32AllocSize: number;
  readonly #rcaches: Rcache[] = [];

  /** init_iova_domain() + iova_domain_init_rcaches(). */
  constructor(startPfn = 1) {
    if (!Number.isInteger(startPfn) || startPfn < 1) {
      throw new RangeError(`iova: start ${startPfn}`);
    }
    this.startPfn = startPfn;
    this.#nodes.push(this.#anchor);
    this.#cachedNode = this.#anchor;
    this.#cached32Node = this.#anchor;
    this.#max32AllocSize = this.dma32bitPfn;
    for (let i = 0; i < IOVA_RANGE_CACHE_MAX_SIZE; i++) this.#rcaches.push(new Rcache());
  }

  /** Ranges in the tree (allocated, cached in the rcache, or reserved), ascending, no anchor. */
  ranges(): IovaRange[] {
    return this.#nodes.slice(0, -1).map((n) => ({ pfnLo: n.pfnLo, pfnHi: n.pfnHi }));
  }

  /** Pfns held in the rcache for size class `order` (loaded, prev, depot). */
  cachedPfns(order: number): number[] {
    const r = this.#rcaches[order];
    if (!r) return [];
    return [...r.loaded.pfns, ...r.prev.pfns, ...r.depot.flatMap((m) => m.pfns)];
  }

  /** reserve_iova(): take [pfnLo, pfnHi] out of the allocatable space. */
  reserve(pfnLo: number, pfnHi: number): void {
    if (!(pfnLo <= pfnHi) || pfnLo < 0) throw new RangeError(`reserve_iova: ${pfnLo}..${pfnHi}`);
    const i = this.#lowerBound(pfnLo);
    const prev = this.#nodes[i - 1];
    if ((prev && prev.pfnHi >= pfnLo) || this.#nodes[i].pfnLo <= pfnHi) {
      throw new Error(`reserve_iova: ${pfnLo}..${pfnHi} overlaps an existing range`);
    }
    this.#nodes.splice(i, 0, { pfnLo, pfnHi });
  }

  /**
   * alloc_iova_fast(): `size` pages at or below `limitPfn`; the first pfn, or
   * 0 on failure. Cacheable sizes are rounded up to a power of two.
   */
  allocFast(size: number, limitPfn: number, flushRcache: boolean): number {
    if (!Number.isInteger(size) || size <= 0) throw new RangeError(`alloc_iova_fast: size ${size}`);
    if (size < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1)) size = roundupPowOfTwo(size);
    const order = orderBase2(size);
    if (order < IOVA_RANGE_CACHE_MAX_SIZE) {
      const pfn = this.#rcacheGet(this.#rcaches[order], limitPfn + 1 - size);
      if (pfn) {
        this.stats.rcacheHits++;
        return pfn;
      }
      this.stats.rcacheMisses++;
    }
    for (;;) {
      const node = this.alloc(size, limitPfn, true);
      if (node) return node.pfnLo;
      if (!flushRcache) return 0;
      flushRcache = false;
      this.stats.rcacheFlushes++;
      this.#freeCachedIovas();
    }
  }

  /** free_iova_fast(): into the rcache when the size class is cached, else back to the tree. */
  freeFast(pfn: number, size: number): void {
    if (this.#rcacheInsert(pfn, size)) {
      this.stats.rcacheInserts++;
      return;
    }
    this.free(pfn);
  }

  /** alloc_iova(): a new tree range of `size` pages at or below `limitPfn`, or null. */
  alloc(size: number, limitPfn: number, sizeAligned: boolean): IovaRange | null {
    const node = this.#allocAndInsert(size, limitPfn + 1, sizeAligned);
    if (node) this.stats.treeAllocs++;
    return node;
  }

  /** find_iova() */
  find(pfn: number): IovaRange | undefined {
    const i = this.#containing(pfn);
    return i < 0 ? undefined : this.#nodes[i];
  }

  /** free_iova(): remove the range holding `pfn` from the tree; throws if there is none. */
  free(pfn: number): void {
    const i = this.#containing(pfn);
    if (i < 0) throw new Error(`free_iova: pfn 0x${pfn.toString(16)} not allocated`);
    const free = this.#nodes[i];
    this.#deleteUpdate(free, i);
    this.#nodes.splice(i, 1);
    this.stats.treeFrees++;
  }

  /** __alloc_and_insert_iova_range(): `limitPfn` is one past the highest usable pfn. */
  #allocAndInsert(size: number, limitPfn: number, sizeAligned: boolean): IovaRange | null {
    const align = sizeAligned ? 2 ** Math.ceil(Math.log2(size)) : 1;
    let highPfn = limitPfn;
    let lowPfn = this.startPfn;
    if (limitPfn <= this.dma32bitPfn && size >= this.#max32AllocSize) return null;
    let curr = limitPfn <= this.dma32bitPfn ? this.#cached32Node : this.#cachedNode;
    let idx = this.#indexOf(curr);
    const retryPfn = curr.pfnHi;
    let newPfn: number;
    let prevIdx: number;
    for (;;) {
      let currNode: IovaRange | undefined = curr;
      do {
        highPfn = Math.min(highPfn, currNode.pfnLo);
        newPfn = Math.floor((highPfn - size) / align) * align;
        prevIdx = idx;
        idx--;
        currNode = idx >= 0 ? this.#nodes[idx] : undefined;
      } while (currNode && newPfn <= currNode.pfnHi && newPfn >= lowPfn);
      if (highPfn < size || newPfn < lowPfn) {
        if (lowPfn === this.startPfn && retryPfn < limitPfn) {
          highPfn = limitPfn;
          lowPfn = retryPfn + 1;
          idx = this.#findLimit(limitPfn);
          curr = this.#nodes[idx];
          continue;
        }
        this.#max32AllocSize = size;
        return null;
      }
      break;
    }
    const node: IovaRange = { pfnLo: newPfn, pfnHi: newPfn + size - 1 };
    // Invariant: the new range sits in a gap, just below the node the walk started its last step at.
    const above = this.#nodes[prevIdx];
    const below = this.#nodes[prevIdx - 1];
    if (node.pfnHi >= above.pfnLo || (below && below.pfnHi >= node.pfnLo)) {
      throw new Error(`iova: allocated ${node.pfnLo}..${node.pfnHi} overlaps a range`);
    }
    this.#nodes.splice(prevIdx, 0, node);
    if (node.pfnHi < this.dma32bitPfn) this.#cached32Node = node;
    else this.#cachedNode = node;
    return node;
  }

  /** __cached_rbnode_delete_update() */
  #deleteUpdate(free: IovaRange, i: number): void {
    const next = this.#nodes[i + 1];
    const c32 = this.#cached32Node;
    if (free === c32 || (free.pfnHi < this.dma32bitPfn && free.pfnLo >= c32.pfnLo)) {
      this.#cached32Node = next;
    }
    if (free.pfnLo < this.dma32bitPfn) this.#max32AllocSize = this.dma32bitPfn;
    if (free.pfnLo >= this.#cachedNode.pfnLo) this.#cachedNode = next;
  }

  /** iova_find_limit(): where to restart a walk from `limitPfn`. */
  #findLimit(limitPfn: number): number {
    if (limitPfn > this.dma32bitPfn) return this.#nodes.length - 1;
    let lo = 0;
    let hi = this.#nodes.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#nodes[mid].pfnHi < limitPfn) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** __iova_rcache_get() */
  #rcacheGet(r: Rcache, limitPfn: number): number {
    let has = false;
    if (!r.loaded.empty) has = true;
    else if (!r.prev.empty) {
      [r.loaded, r.prev] = [r.prev, r.loaded];
      has = true;
    } else if (r.depot.length > 0) {
      r.loaded = r.depot.pop()!;
      has = true;
    }
    return has ? r.loaded.pop(limitPfn) : 0;
  }

  /** iova_rcache_insert() / __iova_rcache_insert() */
  #rcacheInsert(pfn: number, size: number): boolean {
    const order = orderBase2(size);
    if (order >= IOVA_RANGE_CACHE_MAX_SIZE) return false;
    const r = this.#rcaches[order];
    let toFree: Magazine | undefined;
    if (r.loaded.full) {
      if (!r.prev.full) {
        [r.loaded, r.prev] = [r.prev, r.loaded];
      } else {
        if (r.depot.length < MAX_GLOBAL_MAGS) r.depot.push(r.loaded);
        else toFree = r.loaded;
        r.loaded = new Magazine();
      }
    }
    r.loaded.push(pfn);
    if (toFree) { for (const p of toFree.pfns) this.free(p); }
    return true;
  }

  /** free_cpu_cached_iovas() + free_global_cached_iovas() */
  #freeCachedIovas(): void {
    for (const r of this.#rcaches) {
      for (const m of [r.loaded, r.prev, ...r.depot]) {
        for (const p of m.pfns) this.free(p);
        m.pfns.length = 0;
      }
      r.depot.length = 0;
    }
  }

  /** First index whose pfnLo >= pfn. */
  #lowerBound(pfn: number): number {
    let lo = 0;
    let hi = this.#nodes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#nodes[mid].pfnLo < pfn) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #indexOf(node: IovaRange): number {
    const i = this.#lowerBound(node.pfnLo);
    if (this.#nodes[i] !== node) throw new Error("iova: cached node not in the tree");
    return i;
  }

  /** private_find_iova(): index of the range holding `pfn`, or -1. */
  #containing(pfn: number): number {
    const i = this.#lowerBound(pfn + 1) - 1;
    if (i < 0) return -1;
    const n = this.#nodes[i];
    return n !== this.#anchor && pfn >= n.pfnLo && pfn <= n.pfnHi ? i : -1;
  }
}
