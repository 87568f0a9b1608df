/**
 * Bounce buffering (kernel/dma/swiotlb.c): a physically contiguous pool of
 * 2 KiB slots below the device's DMA mask. A mapping copies the CPU buffer
 * into slots and hands the device the slots' address; unmap and
 * sync_for_cpu copy back what the device wrote.
 *
 * The bookkeeping is the kernel's (6.0): each slot records the original
 * address it shadows and the bytes left in its mapping from that slot on
 * (`orig_addr`, `alloc_size`); swiotlb_bounce() trusts only those and the
 * caller's address, and a release frees as many slots as the slot at the
 * caller's address (less its alignment offset) says. A caller that passes
 * an address or size other than the mapping's is not refused: the copy is
 * clipped with the kernel's warnings ("Access before mapping start
 * detected", "Buffer overflow detected"), counted in `swiotlbWarnings`, and
 * a release from the wrong slot frees the wrong run, as it would in the
 * kernel.
 *
 * @module
 */

import { PAGE_SHIFT, PAGE_SIZE, pfnToPhys, type PhysMem } from "../memory/phys.ts";
import { COUNTER, type Stats } from "../stats.ts";
import { DMA_ATTR_SKIP_CPU_SYNC, DMA_MAPPING_ERROR, type DmaDir, DmaDirection } from "./types.ts";

/** IO_TLB_SHIFT */
export const IO_TLB_SHIFT = 11;
/** IO_TLB_SIZE: one slot, 2 KiB. */
export const IO_TLB_SIZE = 1 << IO_TLB_SHIFT;
/** IO_TLB_SEGSIZE: a mapping never spans more than this many slots. */
export const IO_TLB_SEGSIZE = 128;
/** Upper bound on pool size we accept: 2^20 slots (2 GiB). */
export const SWIOTLB_MAX_SLABS = 1 << 20;

/** A WARN the pool printed (dev_WARN_ONCE in swiotlb_bounce(); each occurrence is kept). */
export interface SwiotlbWarning {
  /** The bounce address the caller passed. */
  tlbAddr: bigint;
  /** The kernel's message. */
  message: string;
}

/** Warnings kept in {@link Swiotlb.warnings} (the counter keeps counting). */
export const SWIOTLB_MAX_WARNINGS = 64;

/** nr_slots() */
function nrSlots(bytes: number): number {
  return Math.ceil(bytes / IO_TLB_SIZE);
}

/** A swiotlb pool (struct io_tlb_mem with one area). */
export class Swiotlb implements Disposable {
  /** Physical address of slot 0. */
  readonly start: bigint;
  /** Number of slots. */
  readonly nslabs: number;
  /** The last {@link SWIOTLB_MAX_WARNINGS} warnings, oldest first. */
  readonly warnings: SwiotlbWarning[] = [];
  readonly #phys: PhysMem;
  readonly #stats: Stats;
  readonly #pfn: number;
  readonly #minAlignMask: number;
  /** slots[i].orig_addr (-1n: INVALID_PHYS_ADDR). */
  readonly #orig: BigInt64Array;
  /** slots[i].alloc_size (unsigned int). */
  readonly #allocSize: Uint32Array;
  /** Whether slot i is allocated (the kernel's free list says list == 0). */
  readonly #used: Uint8Array;
  /** Runs handed out by mapSingle and not yet released: first slot -> slots. */
  readonly #runs = new Map<number, number>();
  #index = 0;
  #usedSlots = 0;
  #disposed = false;

  /**
   * swiotlb_init_remap(): reserve `nslabs` slots (rounded up to IO_TLB_SEGSIZE)
   * for a device whose dma_get_min_align_mask() is `minAlignMask`.
   */
  constructor(phys: PhysMem, stats: Stats, nslabs: number, minAlignMask = 0) {
    if (!Number.isInteger(nslabs) || nslabs <= 0 || nslabs > SWIOTLB_MAX_SLABS) {
      throw new RangeError(`swiotlb: bad slot count ${nslabs} (1..${SWIOTLB_MAX_SLABS})`);
    }
    this.nslabs = Math.ceil(nslabs / IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE;
    this.#phys = phys;
    this.#stats = stats;
    this.#minAlignMask = minAlignMask;
    this.#pfn = phys.allocContig((this.nslabs * IO_TLB_SIZE) >> PAGE_SHIFT);
    this.start = pfnToPhys(this.#pfn);
    this.#orig = new BigInt64Array(this.nslabs).fill(-1n);
    this.#allocSize = new Uint32Array(this.nslabs);
    this.#used = new Uint8Array(this.nslabs);
  }

  /** Slots in use. */
  get usedSlots(): number {
    return this.#usedSlots;
  }

  /** Live mappings (runs handed out and not released from their first slot). */
  get mappings(): number {
    return this.#runs.size;
  }

  /** swiotlb_find_pool(): whether `addr` lies in this pool. */
  contains(addr: bigint): boolean {
    return addr >= this.start && addr < this.start + BigInt(this.nslabs * IO_TLB_SIZE);
  }

  /** swiotlb_max_mapping_size() */
  maxMappingSize(minAlignMask: number): number {
    const minAlign = minAlignMask ? Math.ceil(minAlignMask / IO_TLB_SIZE) * IO_TLB_SIZE : 0;
    return IO_TLB_SIZE * IO_TLB_SEGSIZE - minAlign;
  }

  /**
   * swiotlb_tbl_map_single(): bounce `size` bytes at physical `orig`; the slot
   * address, or DMA_MAPPING_ERROR when no run of free slots fits ("swiotlb buffer is full").
   */
  mapSingle(
    orig: bigint,
    size: number,
    _dir: DmaDir,
    minAlignMask: number,
    boundaryMask: bigint,
  ): bigint {
    this.#assertLive();
    if (!Number.isInteger(size) || size <= 0) throw new RangeError(`swiotlb: bad size ${size}`);
    const offset = Number(orig & BigInt(minAlignMask & (IO_TLB_SIZE - 1)));
    const index = this.#findSlots(orig, size + offset, minAlignMask, boundaryMask);
    if (index < 0) return DMA_MAPPING_ERROR;
    const nslots = nrSlots(size + offset);
    for (let i = 0; i < nslots; i++) {
      this.#used[index + i] = 1;
      // alloc_size - (offset + (i << IO_TLB_SHIFT)), with alloc_size = size + offset.
      this.#allocSize[index + i] = (size - i * IO_TLB_SIZE) >>> 0;
      this.#orig[index + i] = orig + BigInt(i * IO_TLB_SIZE);
    }
    this.#runs.set(index, nslots);
    this.#usedSlots += nslots;
    const tlbAddr = this.#slotAddr(index) + BigInt(offset);
    // The kernel copies for every direction, so a partial device write never
    // exposes stale slot contents ("swiotlb: fix info leak with DMA_FROM_DEVICE").
    this.#bounce(tlbAddr, size, DmaDirection.TO_DEVICE);
    return tlbAddr;
  }

  /**
   * swiotlb_tbl_unmap_single(): copy back for FROM_DEVICE/BIDIRECTIONAL, then
   * swiotlb_release_slots() from the slot at `tlbAddr` less its alignment offset.
   */
  unmapSingle(tlbAddr: bigint, size: number, dir: DmaDir, attrs = 0): void {
    this.#assertLive();
    const index = this.#slotOf(tlbAddr);
    if (
      this.#orig[index] !== -1n && !(attrs & DMA_ATTR_SKIP_CPU_SYNC) &&
      (dir === DmaDirection.FROM_DEVICE || dir === DmaDirection.BIDIRECTIONAL)
    ) {
      this.#bounce(tlbAddr, size, DmaDirection.FROM_DEVICE);
    }
    this.#releaseSlots(tlbAddr);
  }

  /** swiotlb_sync_single_for_cpu() */
  syncForCpu(tlbAddr: bigint, size: number, dir: DmaDir): void {
    if (dir === DmaDirection.FROM_DEVICE || dir === DmaDirection.BIDIRECTIONAL) {
      this.#bounce(tlbAddr, size, DmaDirection.FROM_DEVICE);
    }
  }

  /** swiotlb_sync_single_for_device() */
  syncForDevice(tlbAddr: bigint, size: number, dir: DmaDir): void {
    if (dir === DmaDirection.TO_DEVICE || dir === DmaDirection.BIDIRECTIONAL) {
      this.#bounce(tlbAddr, size, DmaDirection.TO_DEVICE);
    }
  }

  /** Release the pool's frames (device teardown: live mappings die with it). */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#used.fill(0);
    this.#orig.fill(-1n);
    this.#runs.clear();
    this.#usedSlots = 0;
    this.#phys.freeContig(this.#pfn, (this.nslabs * IO_TLB_SIZE) >> PAGE_SHIFT);
  }

  #slotAddr(index: number): bigint {
    return this.start + BigInt(index * IO_TLB_SIZE);
  }

  #slotOf(tlbAddr: bigint): number {
    if (!this.contains(tlbAddr)) {
      throw new Error(`swiotlb: 0x${tlbAddr.toString(16)} is not a bounce address`);
    }
    return Number((tlbAddr - this.start) >> BigInt(IO_TLB_SHIFT));
  }

  /** swiotlb_align_offset() */
  #alignOffset(addr: bigint): number {
    return Number(addr & BigInt(this.#minAlignMask & (IO_TLB_SIZE - 1)));
  }

  /** swiotlb_release_slots() */
  #releaseSlots(tlbAddr: bigint): void {
    const offset = this.#alignOffset(tlbAddr);
    const index = Number((tlbAddr - BigInt(offset) - this.start) >> BigInt(IO_TLB_SHIFT));
    if (index < 0) {
      this.#warn(tlbAddr, `release below the pool start (offset ${offset})`);
      return;
    }
    let nslots = nrSlots(this.#allocSize[index] + offset);
    if (index + nslots > this.nslabs) nslots = this.nslabs - index;
    for (let i = index; i < index + nslots; i++) {
      if (this.#used[i]) {
        this.#used[i] = 0;
        this.#usedSlots--;
      }
      this.#orig[i] = -1n;
      this.#allocSize[i] = 0;
    }
    if (this.#runs.get(index) === nslots) {
      this.#runs.delete(index);
    } else {
      // Slots of other runs may now be free and a run's tail still held: what the
      // kernel's free list would hold after such a release.
      for (const [first, n] of [...this.#runs]) {
        if (first < index + nslots && index < first + n) {
          let left = 0;
          for (let i = first; i < first + n; i++) left += this.#used[i];
          if (left === 0) this.#runs.delete(first);
        }
      }
    }
  }

  /** swiotlb_search_pool_area(): next-fit from the rolling index. */
  #findSlots(orig: bigint, allocSize: number, minAlignMask: number, boundaryMask: bigint): number {
    const nslots = nrSlots(allocSize);
    if (nslots > IO_TLB_SEGSIZE) return -1;
    const alignMask = BigInt(minAlignMask & ~(IO_TLB_SIZE - 1));
    let stride = Number(alignMask >> BigInt(IO_TLB_SHIFT)) + 1;
    if (allocSize >= PAGE_SIZE) stride = Math.max(stride, PAGE_SHIFT - IO_TLB_SHIFT + 1);
    const boundary = boundaryMask + 1n;
    let index = this.#index;
    for (let i = 0; i < this.nslabs;) {
      const addr = this.#slotAddr(index);
      if ((addr & alignMask) !== (orig & alignMask)) {
        index = (index + 1) % this.nslabs;
        i++;
        continue;
      }
      const end = addr + BigInt(nslots * IO_TLB_SIZE) - 1n;
      const inSegment = Math.floor(index / IO_TLB_SEGSIZE) ===
        Math.floor((index + nslots - 1) / IO_TLB_SEGSIZE);
      if (inSegment && addr / boundary === end / boundary && this.#free(index, nslots)) {
        this.#index = (index + nslots) % this.nslabs;
        return index;
      }
      index = (index + stride) % this.nslabs;
      i += stride;
    }
    return -1;
  }

  #free(index: number, nslots: number): boolean {
    if (index + nslots > this.nslabs) return false;
    for (let i = 0; i < nslots; i++) if (this.#used[index + i]) return false;
    return true;
  }

  /**
   * swiotlb_bounce(): copy between the CPU buffer and the slots, trusting
   * only the slot's orig_addr/alloc_size and the caller's address and size.
   */
  #bounce(tlbAddr: bigint, size: number, dir: DmaDir): void {
    const index = this.#slotOf(tlbAddr);
    let orig = this.#orig[index];
    let allocSize = this.#allocSize[index];
    if (orig === -1n) return; // INVALID_PHYS_ADDR: nothing mapped here
    let tlbOffset = Number(tlbAddr & BigInt(IO_TLB_SIZE - 1));
    const origOffset = this.#alignOffset(orig);
    if (tlbOffset < origOffset) {
      this.#warn(
        tlbAddr,
        `Access before mapping start detected. orig offset ${origOffset}, requested offset ${tlbOffset}.`,
      );
      return;
    }
    tlbOffset -= origOffset;
    if (tlbOffset > allocSize) {
      this.#warn(
        tlbAddr,
        `Buffer overflow detected. Allocation size: ${allocSize}. Mapping size: ${size}+${tlbOffset}.`,
      );
      return;
    }
    orig += BigInt(tlbOffset);
    allocSize -= tlbOffset;
    if (size > allocSize) {
      this.#warn(
        tlbAddr,
        `Buffer overflow detected. Allocation size: ${allocSize}. Mapping size: ${size}.`,
      );
      size = allocSize;
    }
    const buf = new Uint8Array(size);
    if (dir === DmaDirection.TO_DEVICE) {
      this.#phys.read(orig, buf);
      this.#phys.write(tlbAddr, buf);
    } else {
      this.#phys.read(tlbAddr, buf);
      this.#phys.write(orig, buf);
    }
    this.#stats.add(COUNTER.bounceBytes, size);
  }

  #warn(tlbAddr: bigint, message: string): void {
    this.#stats.add(COUNTER.swiotlbWarnings);
    if (this.warnings.length === SWIOTLB_MAX_WARNINGS) this.warnings.shift();
    this.warnings.push({ tlbAddr, message: `swiotlb: ${message}` });
  }

  #assertLive(): void {
    if (this.#disposed) throw new Error("swiotlb: used after dispose");
  }
}
