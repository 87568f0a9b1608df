/**
 * The real backend's physical memory: native storage for the host stack's
 * page frames, and the registry that keeps the C device's frame table in
 * step with them (a {@link FrameBacking} for `sim/memory/phys.ts`).
 *
 * Kernel frames (queues, PRP arrays, pool pages, IOMMU table pages, bounce
 * slots) come from a {@link CoherentArena}: one anonymous mapping, handed out
 * page by page and never reused. A freed block is poisoned with
 * {@link POISON_FREE} (mm/slab's 0x6b) and stays mapped in quarantine, so a
 * device that still reads it (a stale PRP list) reads poison instead of
 * another allocation's data, and never touches unmapped memory. User frames
 * are the application's own native buffers, registered as they are.
 *
 * @module
 */

import type { FrameBacking } from "../sim/memory/phys.ts";
import { mapAnonymous, type NativeMapping, PAGE_SIZE } from "./libc.ts";

/** Byte written over freed coherent memory (POISON_FREE, include/linux/poison.h). */
export const POISON_FREE = 0x6b;
/** Default arena reservation: 1 GiB of address space, committed only as touched. */
export const ARENA_DEFAULT_BYTES = 1 << 30;

/** Page-granular native memory for kernel frames, with freed blocks quarantined. */
export class CoherentArena implements Disposable {
  readonly #map: NativeMapping;
  readonly #buf: ArrayBuffer;
  #next = 0;
  /** Pages quarantined after being freed. */
  quarantinedPages = 0;

  /** Reserve `bytes` of address space (a page multiple). */
  constructor(bytes = ARENA_DEFAULT_BYTES) {
    this.#map = mapAnonymous(bytes);
    this.#buf = Deno.UnsafePointerView.getArrayBuffer(this.#map.ptr, bytes);
  }

  /** Pages handed out so far (live and quarantined). */
  get pagesUsed(): number {
    return this.#next / PAGE_SIZE;
  }

  /** Zeroed storage for `n` contiguous pages; throws when the reservation is used up. */
  alloc(n: number): Uint8Array {
    const len = n * PAGE_SIZE;
    if (!Number.isInteger(n) || n <= 0 || this.#next + len > this.#buf.byteLength) {
      throw new RangeError(`CoherentArena: cannot allocate ${n} pages (${this.pagesUsed} used)`);
    }
    const v = new Uint8Array(this.#buf, this.#next, len);
    this.#next += len;
    v.fill(0); // fresh pages read as zero; a reused one never happens
    return v;
  }

  /** Poison freed storage and keep it mapped (quarantine). */
  quarantine(storage: Uint8Array): void {
    storage.fill(POISON_FREE);
    this.quarantinedPages += storage.length / PAGE_SIZE;
  }

  /** Unmap the whole arena: only after every device that could read it is gone. */
  [Symbol.dispose](): void {
    this.#map[Symbol.dispose]();
  }
}

/** A device's frame table (the C controller's nvme_emu_frame_map/unmap). */
export interface FrameTable {
  /** Register frames [pfn, pfn + n) at native address `ptr` (n contiguous pages). */
  frameMap(pfn: number, n: number, ptr: Deno.PointerObject): void;
  /** Remove frames [pfn, pfn + n). */
  frameUnmap(pfn: number, n: number): void;
}

interface Run {
  n: number;
  storage: Uint8Array;
}

/**
 * The {@link FrameBacking} of the real backend: kernel storage from a
 * {@link CoherentArena}, and every frame allocation and free forwarded to the
 * attached device's frame table. A device attached late is told of every
 * frame already live.
 */
export class NativeFrames implements FrameBacking {
  readonly #arena: CoherentArena;
  /** Live runs by first pfn. */
  readonly #runs = new Map<number, Run>();
  /** First pfn of the run holding each live pfn. */
  readonly #runOf = new Map<number, number>();
  #table: FrameTable | undefined;

  /** Back frames with `arena`. */
  constructor(arena: CoherentArena) {
    this.#arena = arena;
  }

  /** Frames currently registered. */
  get liveFrames(): number {
    return this.#runOf.size;
  }

  /** Send every later change, and every live frame now, to `table`. */
  attach(table: FrameTable): void {
    if (this.#table) throw new Error("NativeFrames: a frame table is already attached");
    this.#table = table;
    for (const [pfn, r] of this.#runs) table.frameMap(pfn, r.n, pointerOf(r.storage));
  }

  /** Stop forwarding (the device is going away). */
  detach(): void {
    this.#table = undefined;
  }

  /** FrameBacking: zeroed native storage for `n` kernel frames. */
  kernelStorage(_pfn: number, n: number): Uint8Array {
    return this.#arena.alloc(n);
  }

  /** FrameBacking: register a run with the device. */
  framesMapped(pfn: number, n: number, data: Uint8Array): void {
    if (data.length !== n * PAGE_SIZE) throw new RangeError("NativeFrames: storage size");
    const p = pointerOf(data);
    if (BigInt(Deno.UnsafePointer.value(p)) % BigInt(PAGE_SIZE) !== 0n) {
      throw new RangeError("NativeFrames: frame storage is not page aligned");
    }
    for (let i = 0; i < n; i++) {
      if (this.#runOf.has(pfn + i)) throw new Error(`NativeFrames: pfn ${pfn + i} already live`);
    }
    this.#runs.set(pfn, { n, storage: data });
    for (let i = 0; i < n; i++) this.#runOf.set(pfn + i, pfn);
    this.#table?.frameMap(pfn, n, p);
  }

  /** FrameBacking: unregister; kernel storage is poisoned and quarantined. */
  framesUnmapped(pfn: number, n: number, kernel: boolean): void {
    for (let i = 0; i < n; i++) {
      const f = pfn + i;
      const first = this.#runOf.get(f);
      if (first === undefined) throw new Error(`NativeFrames: pfn ${f} not live`);
      const run = this.#runs.get(first)!;
      this.#table?.frameUnmap(f, 1);
      this.#runOf.delete(f);
      const off = (f - first) * PAGE_SIZE;
      if (kernel) this.#arena.quarantine(run.storage.subarray(off, off + PAGE_SIZE));
      // A run ends when its last frame goes (kernel frames can be put one by one).
      let any = false;
      for (let j = 0; j < run.n && !any; j++) any = this.#runOf.get(first + j) === first;
      if (!any) this.#runs.delete(first);
    }
  }
}

/** The native address of a view's first byte. */
export function pointerOf(v: Uint8Array): Deno.PointerObject {
  const p = Deno.UnsafePointer.of(v as Uint8Array<ArrayBuffer>);
  if (p === null) throw new Error("pointerOf: view has no native address");
  return p;
}
