/**
 * Bounce buffering (kernel/dma/swiotlb.c): a physically contiguous pool of
 * 2 KiB slots below the device's DMA mask. A mapping copies the CPU buffer
 * into slots and hands the device the slots' address; unmap and
 * sync_for_cpu copy back what the device wrote.
 *
 * @module
 */

import { PAGE_SHIFT, PAGE_SIZE, pfnToPhys, type PhysMem } from "../memory/phys.ts";
import type { Stats } from "../stats.ts";
import { DMA_MAPPING_ERROR, type DmaDir, DmaDirection } from "./types.ts";

/** IO_TLB_SHIFT */
export const IO_TLB_SHIFT = 11;
/** IO_TLB_SIZE: one slot, 2 KiB. */
export const IO_TLB_SIZE = 1 << IO_TLB_SHIFT;
/** IO_TLB_SEGSIZE: a mapping never spans more than this many slots. */
export const IO_TLB_SEGSIZE = 128;
/** Upper bound on pool size we accept: 2^20 slots (2 GiB). */
export const SWIOTLB_MAX_SLABS = 1 << 20;

/** One live bounce mapping (the slots' orig_addr/alloc_size bookkeeping). */
interface BounceSlot {
  /** First slot index. */
  index: number;
  /** Number of slots. */
  nslots: number;
  /** Bus (= physical) address handed to the device. */
  tlbAddr: bigint;
  /** Physical address of the CPU buffer. */
  orig: bigint;
  /** Mapping size in bytes. */
  size: number;
}

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
  readonly #phys: PhysMem;
  readonly #stats: Stats;
  readonly #pfn: number;
  readonly #owner: (BounceSlot | undefined)[];
  #index = 0;
  #used = 0;
  #disposed = false;

  /** swiotlb_init_remap(): reserve `nslabs` slots (rounded up to IO_TLB_SEGSIZE). */
  constructor(phys: PhysMem, stats: Stats, nslabs: number) {
    if (!Number.isInteger(nslabs) || nslabs <= 0 || nslabs > SWIOTLB_MAX_SLABS) {
      throw new RangeError(`swiotlb: bad slot count ${nslabs} (1..${SWIOTLB_MAX_SLABS})`);
    }
    this.nslabs = Math.ceil(nslabs / IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE;
    this.#phys = phys;
    this.#stats = stats;
    this.#pfn = phys.allocContig((this.nslabs * IO_TLB_SIZE) >> PAGE_SHIFT);
    this.start = pfnToPhys(this.#pfn);
    this.#owner = new Array(this.nslabs).fill(undefined);
  }

  /** Slots in use. */
  get usedSlots(): number {
    return this.#used;
  }

  /** Live mappings. */
  get mappings(): number {
    return new Set(this.#owner.filter((o) => o !== undefined)).size;
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
    const tlbAddr = this.#slotAddr(index) + BigInt(offset);
    const slot: BounceSlot = { index, nslots, tlbAddr, orig, size };
    for (let i = 0; i < nslots; i++) this.#owner[index + i] = slot;
    this.#used += nslots;
    // The kernel copies for every direction, so a partial device write never
    // exposes stale slot contents ("swiotlb: fix info leak with DMA_FROM_DEVICE").
    this.#bounce(slot, tlbAddr, size, DmaDirection.TO_DEVICE);
    return tlbAddr;
  }

  /** swiotlb_tbl_unmap_single(): copy back for FROM_DEVICE/BIDIRECTIONAL, release the slots. */
  unmapSingle(tlbAddr: bigint, size: number, dir: DmaDir): void {
    this.#assertLive();
    const slot = this.#lookup(tlbAddr, size);
    if (slot.tlbAddr !== tlbAddr) {
      throw new Error(`swiotlb: unmap of 0x${tlbAddr.toString(16)} inside a mapping`);
    }
    if (dir === DmaDirection.FROM_DEVICE || dir === DmaDirection.BIDIRECTIONAL) {
      this.#bounce(slot, tlbAddr, size, DmaDirection.FROM_DEVICE);
    }
    for (let i = 0; i < slot.nslots; i++) this.#owner[slot.index + i] = undefined;
    this.#used -= slot.nslots;
    if (this.#used < 0) throw new Error("swiotlb: used slot count underflow");
  }

  /** swiotlb_sync_single_for_cpu() */
  syncForCpu(tlbAddr: bigint, size: number, dir: DmaDir): void {
    const slot = this.#lookup(tlbAddr, size);
    if (dir === DmaDirection.FROM_DEVICE || dir === DmaDirection.BIDIRECTIONAL) {
      this.#bounce(slot, tlbAddr, size, DmaDirection.FROM_DEVICE);
    }
  }

  /** swiotlb_sync_single_for_device() */
  syncForDevice(tlbAddr: bigint, size: number, dir: DmaDir): void {
    const slot = this.#lookup(tlbAddr, size);
    if (dir === DmaDirection.TO_DEVICE || dir === DmaDirection.BIDIRECTIONAL) {
      this.#bounce(slot, tlbAddr, size, DmaDirection.TO_DEVICE);
    }
  }

  /** Release the pool's frames (device teardown: live mappings die with it). */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#owner.fill(undefined);
    this.#used = 0;
    this.#phys.freeContig(this.#pfn, (this.nslabs * IO_TLB_SIZE) >> PAGE_SHIFT);
  }

  #slotAddr(index: number): bigint {
    return this.start + BigInt(index * IO_TLB_SIZE);
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
    for (let i = 0; i < nslots; i++) if (this.#owner[index + i] !== undefined) return false;
    return true;
  }

  #lookup(tlbAddr: bigint, size: number): BounceSlot {
    if (!this.contains(tlbAddr)) {
      throw new Error(`swiotlb: 0x${tlbAddr.toString(16)} is not a bounce address`);
    }
    const slot = this.#owner[Number((tlbAddr - this.start) >> BigInt(IO_TLB_SHIFT))];
    if (!slot) throw new Error(`swiotlb: 0x${tlbAddr.toString(16)} is not mapped`);
    if (tlbAddr + BigInt(size) > slot.tlbAddr + BigInt(slot.size)) {
      throw new Error(`swiotlb: ${size} bytes at 0x${tlbAddr.toString(16)} exceed the mapping`);
    }
    return slot;
  }

  /** swiotlb_bounce(): copy between the CPU buffer and the slots. */
  #bounce(slot: BounceSlot, tlbAddr: bigint, size: number, dir: DmaDir): void {
    const orig = slot.orig + (tlbAddr - slot.tlbAddr);
    const buf = new Uint8Array(size);
    if (dir === DmaDirection.TO_DEVICE) {
      this.#phys.read(orig, buf);
      this.#phys.write(tlbAddr, buf);
    } else {
      this.#phys.read(tlbAddr, buf);
      this.#phys.write(orig, buf);
    }
    this.#stats.add("bounceBytes", size);
  }

  #assertLive(): void {
    if (this.#disposed) throw new Error("swiotlb: used after dispose");
  }
}
