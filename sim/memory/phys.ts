/**
 * Simulated physical memory: page frames (`struct page`) identified by a page
 * frame number, each with a reference count and 4 KiB of storage.
 *
 * Frame numbers are what DMA addresses are made of, so they are deliberately
 * scattered (user frames come from a seeded random choice over a large frame
 * space; only a transparent huge page is a contiguous run of them) and a
 * stray physical address can be caught: {@link PhysMem.read} and
 * {@link PhysMem.write} throw on a frame that is not allocated.
 *
 * A frame's storage may live inside a larger buffer (a user mapping's
 * `Uint8Array`), so that what the application sees through its buffer is
 * exactly what the device reads and writes through the frame.
 *
 * Mirrors: mm/page_alloc.c (alloc_pages, __free_pages), include/linux/mm.h
 * (get_page, put_page, page_ref_count).
 *
 * @module
 */

import { Rng } from "../random.ts";

/** Page size of the simulated host (x86_64). */
export const PAGE_SHIFT = 12;
/** 4096. */
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** Mask of the offset within a page. */
export const PAGE_MASK_LOW = PAGE_SIZE - 1;
/** HPAGE_PMD_NR: base pages in a transparent huge page (2 MiB on x86_64). */
export const HPAGE_PMD_NR = 512;
/** HPAGE_PMD_SIZE */
export const HPAGE_PMD_SIZE = HPAGE_PMD_NR * PAGE_SIZE;

/** A page frame. */
export interface Page {
  /** Page frame number; physical address is `pfn << PAGE_SHIFT`. */
  readonly pfn: number;
  /** The frame's 4 KiB of storage. */
  readonly data: Uint8Array;
  /** page_ref_count(): references held (mapping, pins, kernel users). */
  refcount: number;
  /** Pins by pin_user_pages (FOLL_PIN), a subset of refcount. */
  pincount: number;
  /** Who allocated it: "user", "kernel". */
  readonly owner: "user" | "kernel";
}

/** Byte written over freed kernel memory (POISON_FREE, include/linux/poison.h). */
export const POISON_FREE = 0x6b;

/**
 * Freed kernel frames held in quarantine before their pfns can be handed out
 * again (like KASAN's quarantine, bounded): 4096 frames, 16 MiB.
 */
export const KERNEL_QUARANTINE_FRAMES = 4096;

/** A physical address outside any allocated frame was accessed. */
export class PhysFault extends Error {
  /** The physical address at fault. */
  readonly paddr: bigint;
  /** Build a fault for a physical address. */
  constructor(paddr: bigint, what: string) {
    super(`physical memory fault: ${what} at 0x${paddr.toString(16)}`);
    this.paddr = paddr;
    this.name = "PhysFault";
  }
}

/**
 * Where frames' storage lives and who must hear of them. Without one, frames
 * are JavaScript memory (the `sim` backend). The `real` backend gives native
 * memory (kernel frames from a quarantining arena, user frames from the
 * application's native buffers) and registers every frame with the C
 * device's frame table, so a physical address means the same bytes to the
 * host stack and to the device.
 */
export interface FrameBacking {
  /** Zeroed storage for `n` physically contiguous kernel frames from `pfn`. */
  kernelStorage(pfn: number, n: number): Uint8Array;
  /** Frames [pfn, pfn + n) are allocated with `data` (n pages, contiguous) as storage. */
  framesMapped(pfn: number, n: number, data: Uint8Array): void;
  /** Frames [pfn, pfn + n) were freed; a kernel frame's storage may be quarantined. */
  framesUnmapped(pfn: number, n: number, kernel: boolean): void;
}

/** Options for {@link PhysMem}. */
export interface PhysMemOptions {
  /** Seed for frame placement. */
  seed: number;
  /** Number of frames in the physical address space (default 2^24 = 64 GiB). */
  frameSpace?: number;
  /** Upper bound on frames allocated at once (default 2^20 = 4 GiB). */
  maxAllocatedFrames?: number;
  /** Native storage and frame registration (default: JavaScript memory, no registration). */
  backing?: FrameBacking;
  /** Freed kernel frames kept in quarantine (default {@link KERNEL_QUARANTINE_FRAMES}). */
  quarantineFrames?: number;
}

/** The host's physical memory. */
export class PhysMem {
  readonly #frames = new Map<number, Page>();
  readonly #rng: Rng;
  readonly #frameSpace: number;
  readonly #maxAllocated: number;
  /** Next frame for physically contiguous kernel allocations (low memory, bump then reuse). */
  #nextKernelPfn = 0x100;
  readonly #kernelFreeRuns: number[] = [];
  readonly #backing: FrameBacking | undefined;
  /** Freed kernel frames: poisoned, still on the bus, not reusable yet. */
  readonly #quarantine = new Map<number, Page>();
  /** Quarantined runs, oldest first. */
  readonly #quarantineFifo: { pfn: number; n: number }[] = [];
  readonly #quarantineMax: number;

  /** Create an empty physical address space. */
  constructor(opts: PhysMemOptions) {
    this.#backing = opts.backing;
    this.#rng = new Rng(opts.seed ^ 0x5eed_f4a3);
    this.#frameSpace = opts.frameSpace ?? 1 << 24;
    this.#maxAllocated = opts.maxAllocatedFrames ?? 1 << 20;
    this.#quarantineMax = opts.quarantineFrames ?? KERNEL_QUARANTINE_FRAMES;
    if (!Number.isInteger(this.#quarantineMax) || this.#quarantineMax < 0) {
      throw new RangeError(`PhysMem: quarantineFrames ${opts.quarantineFrames}`);
    }
  }

  /** Number of frames currently allocated. */
  get allocatedFrames(): number {
    return this.#frames.size;
  }

  /** Whether a device access to frame `pfn` reaches RAM (allocated or quarantined). */
  onBus(pfn: number): boolean {
    return this.#frames.has(pfn) || this.#quarantine.has(pfn);
  }

  /** The frame a device access to `pfn` reaches: allocated or quarantined, else undefined. */
  busFrame(pfn: number): Page | undefined {
    return this.#frames.get(pfn) ?? this.#quarantine.get(pfn);
  }

  /** Freed kernel frames in quarantine (poisoned, still readable by a device). */
  get quarantinedFrames(): number {
    return this.#quarantine.size;
  }

  /** The frame with this pfn, or undefined if it is not allocated. */
  page(pfn: number): Page | undefined {
    return this.#frames.get(pfn);
  }

  /**
   * Allocate `n` user frames at scattered pfns (alloc_pages for anonymous
   * memory), each with refcount 1. `backing`, if given, provides storage:
   * frame i is `backing[i*4096 .. (i+1)*4096)`.
   */
  allocUserFrames(n: number, backing?: Uint8Array): Page[] {
    this.#checkLimit(n);
    if (backing && backing.length < n * PAGE_SIZE) throw new RangeError("backing too small");
    const lowUser = this.#frameSpace >>> 1; // user frames in the upper half
    const pages: Page[] = [];
    for (let i = 0; i < n; i++) {
      let pfn: number;
      do pfn = lowUser + this.#rng.int(this.#frameSpace - lowUser); while (this.#frames.has(pfn));
      const data = backing
        ? backing.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
        : new Uint8Array(PAGE_SIZE);
      const page: Page = { pfn, data, refcount: 1, pincount: 0, owner: "user" };
      this.#frames.set(pfn, page);
      pages.push(page);
    }
    if (this.#backing) {
      if (!backing) throw new Error("PhysMem: user frames need storage the device can reach");
      for (const p of pages) this.#backing.framesMapped(p.pfn, 1, p.data);
    }
    return pages;
  }

  /**
   * A transparent huge page for anonymous memory (do_huge_pmd_anonymous_page
   * -> an order-9 folio): HPAGE_PMD_NR physically contiguous user frames
   * from a HPAGE_PMD_NR-aligned pfn, chosen at random like other user
   * frames, each with refcount 1 and its 4 KiB of `backing`.
   */
  allocUserHugePage(backing?: Uint8Array): Page[] {
    const n = HPAGE_PMD_NR;
    this.#checkLimit(n);
    if (backing && backing.length < n * PAGE_SIZE) throw new RangeError("backing too small");
    const lowUser = this.#frameSpace >>> 1;
    const slots = (this.#frameSpace - lowUser) / n;
    let start = -1;
    for (let tries = 0; tries < 64 && start < 0; tries++) {
      const s = lowUser + this.#rng.int(slots) * n;
      let free = true;
      for (let i = 0; i < n && free; i++) free = !this.#frames.has(s + i);
      if (free) start = s;
    }
    if (start < 0) throw new RangeError("PhysMem: no free huge page frame range");
    const data = backing ?? new Uint8Array(n * PAGE_SIZE);
    const pages: Page[] = [];
    for (let i = 0; i < n; i++) {
      const page: Page = {
        pfn: start + i,
        data: data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE),
        refcount: 1,
        pincount: 0,
        owner: "user",
      };
      this.#frames.set(page.pfn, page);
      pages.push(page);
    }
    if (this.#backing) {
      if (!backing) throw new Error("PhysMem: user frames need storage the device can reach");
      this.#backing.framesMapped(start, n, data.subarray(0, n * PAGE_SIZE));
    }
    return pages;
  }

  /**
   * Allocate `n` physically contiguous kernel frames (alloc_pages with an
   * order, as dma_alloc_coherent and dma pools use), refcount 1, zeroed.
   * Returns the first pfn.
   */
  allocContig(n: number): number {
    this.#checkLimit(n);
    let start = -1;
    if (n === 1 && this.#kernelFreeRuns.length > 0) start = this.#kernelFreeRuns.pop()!;
    if (start < 0) {
      start = this.#nextKernelPfn;
      this.#nextKernelPfn += n;
      if (this.#nextKernelPfn >= this.#frameSpace >>> 1) {
        throw new RangeError("PhysMem: kernel frame region exhausted");
      }
    }
    const backing = this.#backing
      ? this.#backing.kernelStorage(start, n)
      : new Uint8Array(n * PAGE_SIZE);
    if (backing.length !== n * PAGE_SIZE) throw new Error("PhysMem: kernel storage size");
    for (let i = 0; i < n; i++) {
      this.#frames.set(start + i, {
        pfn: start + i,
        data: backing.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE),
        refcount: 1,
        pincount: 0,
        owner: "kernel",
      });
    }
    this.#backing?.framesMapped(start, n, backing);
    return start;
  }

  /**
   * Free `n` contiguous kernel frames from {@link PhysMem.allocContig}. They
   * are poisoned with {@link POISON_FREE} and quarantined: gone for the
   * kernel, but a device that still holds their bus address reads the poison
   * (as it would read a freed page of RAM), and their pfns are not handed
   * out again until later frees push them out of the bounded quarantine
   * ({@link PhysMemOptions.quarantineFrames}).
   */
  freeContig(pfn: number, n: number): void {
    for (let i = 0; i < n; i++) {
      const p = this.#frames.get(pfn + i);
      if (!p || p.owner !== "kernel") {
        throw new Error(`freeContig: pfn ${pfn + i} not a kernel frame`);
      }
      if (p.refcount !== 1) throw new Error(`freeContig: pfn ${pfn + i} refcount ${p.refcount}`);
    }
    this.#quarantineRun(pfn, n);
  }

  #quarantineRun(pfn: number, n: number): void {
    for (let i = 0; i < n; i++) {
      const p = this.#frames.get(pfn + i)!;
      this.#frames.delete(pfn + i);
      p.refcount = 0;
      p.data.fill(POISON_FREE);
      this.#quarantine.set(pfn + i, p);
    }
    this.#quarantineFifo.push({ pfn, n });
    while (this.#quarantine.size > this.#quarantineMax) {
      const old = this.#quarantineFifo.shift()!;
      for (let i = 0; i < old.n; i++) this.#quarantine.delete(old.pfn + i);
      if (old.n === 1) this.#kernelFreeRuns.push(old.pfn);
      this.#backing?.framesUnmapped(old.pfn, old.n, true);
    }
  }

  /** get_page(): take a reference. */
  getPage(pfn: number): void {
    const p = this.#frames.get(pfn);
    if (!p) throw new Error(`get_page: pfn ${pfn} not allocated`);
    p.refcount++;
  }

  /** put_page(): drop a reference; the frame is freed at zero. */
  putPage(pfn: number): void {
    const p = this.#frames.get(pfn);
    if (!p) throw new Error(`put_page: pfn ${pfn} not allocated`);
    if (p.refcount <= 0) throw new Error(`put_page: pfn ${pfn} refcount underflow`);
    p.refcount--;
    if (p.refcount === 0) {
      if (p.pincount !== 0) throw new Error(`put_page: pfn ${pfn} freed while pinned`);
      if (p.owner === "kernel") {
        p.refcount = 1;
        this.#quarantineRun(pfn, 1);
        return;
      }
      this.#frames.delete(pfn);
      this.#backing?.framesUnmapped(pfn, 1, false);
    }
  }

  /** Copy `dst.length` bytes from physical address `paddr`; throws {@link PhysFault} on a hole. */
  read(paddr: bigint, dst: Uint8Array): void {
    let done = 0;
    while (done < dst.length) {
      const a = paddr + BigInt(done);
      const pfn = Number(a >> BigInt(PAGE_SHIFT));
      const off = Number(a & BigInt(PAGE_MASK_LOW));
      const p = this.#frames.get(pfn) ?? this.#quarantine.get(pfn);
      if (!p) throw new PhysFault(a, "read of unallocated frame");
      const n = Math.min(PAGE_SIZE - off, dst.length - done);
      dst.set(p.data.subarray(off, off + n), done);
      done += n;
    }
  }

  /** Copy `src` to physical address `paddr`; throws {@link PhysFault} on a hole. */
  write(paddr: bigint, src: Uint8Array): void {
    let done = 0;
    while (done < src.length) {
      const a = paddr + BigInt(done);
      const pfn = Number(a >> BigInt(PAGE_SHIFT));
      const off = Number(a & BigInt(PAGE_MASK_LOW));
      const p = this.#frames.get(pfn) ?? this.#quarantine.get(pfn);
      if (!p) throw new PhysFault(a, "write to unallocated frame");
      const n = Math.min(PAGE_SIZE - off, src.length - done);
      p.data.set(src.subarray(done, done + n), off);
      done += n;
    }
  }

  #checkLimit(n: number): void {
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`PhysMem: bad frame count ${n}`);
    if (this.#frames.size + n > this.#maxAllocated) {
      throw new RangeError(
        `PhysMem: out of frames (${this.#frames.size} + ${n} > ${this.#maxAllocated})`,
      );
    }
  }
}

/** Physical address of a pfn plus offset. */
export function pfnToPhys(pfn: number, offset = 0): bigint {
  return (BigInt(pfn) << BigInt(PAGE_SHIFT)) + BigInt(offset);
}
