/**
 * A simulated process address space (`struct mm_struct`): anonymous mappings
 * backed by scattered page frames, a page-table walk, user copies, and page
 * pinning for I/O.
 *
 * Each mapping keeps one contiguous `Uint8Array` as the storage of its frames,
 * so the application holds a plain byte view of its buffer while the kernel
 * side and the device reach the same bytes through physical frames.
 *
 * Mirrors: mm/mmap.c (do_mmap, do_munmap), mm/gup.c (pin_user_pages_fast,
 * unpin_user_pages), lib/usercopy.c (copy_from_user, copy_to_user).
 *
 * @module
 */

import { Errno } from "../uapi/errno.ts";
import { COUNTER, type Stats } from "../stats.ts";
import type { UserMemory } from "../uapi/register_rules.ts";
import {
  HPAGE_PMD_NR,
  HPAGE_PMD_SIZE,
  type Page,
  PAGE_SHIFT,
  PAGE_SIZE,
  type PhysMem,
} from "./phys.ts";

/** Start of the mmap area (like x86_64's top-down base, kept simple). */
export const MMAP_BASE = 0x7f00_0000_0000n;

const U64_LIMIT = 1n << 64n;

/** One anonymous mapping (`struct vm_area_struct`). */
export interface Vma {
  /** First byte (page aligned). */
  readonly start: bigint;
  /** Length in bytes (page multiple). */
  readonly length: number;
  /** The frames, one per page. */
  readonly pages: Page[];
  /** Storage of all frames, contiguous, in virtual order. */
  readonly bytes: Uint8Array;
}

/** The result of pinning: frames and the offset of the first byte in the first one. */
export interface PinnedRange {
  /** Pinned frames in virtual order. */
  pages: Page[];
  /** Offset of the start address within pages[0]. */
  offset: number;
}

/** Options of {@link UserMm.mmap} and {@link UserMm.mmapFixed}. */
export interface MmapOptions {
  /**
   * madvise(MADV_HUGEPAGE) with transparent huge pages enabled: every 2 MiB
   * window the mapping covers whole is backed by one physically contiguous
   * huge page (default false: every page its own scattered frame).
   */
  hugePage?: boolean;
}

function alignUp(x: bigint, a: bigint): bigint {
  return (x + a - 1n) / a * a;
}

/** A process address space over a {@link PhysMem}. */
export class UserMm implements UserMemory {
  readonly #phys: PhysMem;
  readonly #stats: Stats | undefined;
  readonly #vmas: Vma[] = []; // sorted by start
  #next = MMAP_BASE;

  /** Create an empty address space. */
  constructor(phys: PhysMem, stats?: Stats) {
    this.#phys = phys;
    this.#stats = stats;
  }

  /** The physical memory this address space maps. */
  get phys(): PhysMem {
    return this.#phys;
  }

  /**
   * mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS): a
   * page-aligned mapping with fresh zeroed frames. A one-page guard gap is
   * left after each mapping so an overrun faults. With `hugePage` (the
   * mapping then madvise(MADV_HUGEPAGE)d, with THP available) it starts on a
   * 2 MiB boundary and each 2 MiB it covers whole is one transparent huge
   * page, so physically contiguous; other pages get scattered frames.
   */
  mmap(length: number, opts: MmapOptions = {}): Vma {
    if (!Number.isInteger(length) || length <= 0) {
      throw new RangeError(`mmap: bad length ${length}`);
    }
    const npages = Math.ceil(length / PAGE_SIZE);
    const bytes = new Uint8Array(npages * PAGE_SIZE);
    if (opts.hugePage) this.#next = alignUp(this.#next, BigInt(HPAGE_PMD_SIZE));
    const start = this.#next;
    const pages = this.#frames(start, npages, bytes, opts.hugePage ?? false);
    const vma: Vma = { start, length: npages * PAGE_SIZE, pages, bytes };
    this.#next += BigInt((npages + 1) * PAGE_SIZE);
    this.#vmas.push(vma);
    return vma;
  }

  /**
   * Frames for `npages` pages at virtual `start`: scattered, or with
   * `hugePage` a huge page for every HPAGE_PMD_SIZE-aligned window the range
   * covers whole (the fault path maps a PMD only there).
   */
  #frames(start: bigint, npages: number, bytes: Uint8Array, hugePage: boolean): Page[] {
    if (!hugePage) return this.#phys.allocUserFrames(npages, bytes);
    const pages: Page[] = [];
    let i = 0;
    while (i < npages) {
      const va = start + BigInt(i * PAGE_SIZE);
      const whole = va % BigInt(HPAGE_PMD_SIZE) === 0n && npages - i >= HPAGE_PMD_NR;
      const at = bytes.subarray(i * PAGE_SIZE);
      if (whole) {
        pages.push(...this.#phys.allocUserHugePage(at.subarray(0, HPAGE_PMD_SIZE)));
        i += HPAGE_PMD_NR;
      } else {
        pages.push(...this.#phys.allocUserFrames(1, at.subarray(0, PAGE_SIZE)));
        i++;
      }
    }
    return pages;
  }

  /**
   * mmap(addr, len, ..., MAP_FIXED_NOREPLACE) over existing storage: make
   * `bytes` (a page multiple, page aligned in the process) the mapping at
   * `addr`. The real backend uses it to mirror the application's native
   * buffers into the host stack at their real addresses, so one address
   * names the same bytes for the live kernel, the host stack and the device.
   * -EINVAL for a misaligned or empty range, -EEXIST if it overlaps a mapping.
   */
  mmapFixed(addr: bigint, bytes: Uint8Array, opts: MmapOptions = {}): Vma | number {
    if (addr % BigInt(PAGE_SIZE) !== 0n || bytes.length === 0 || bytes.length % PAGE_SIZE !== 0) {
      return -Errno.EINVAL;
    }
    const end = addr + BigInt(bytes.length);
    for (const v of this.#vmas) {
      if (addr < v.start + BigInt(v.length) && v.start < end) return -Errno.EEXIST;
    }
    const npages = bytes.length / PAGE_SIZE;
    const pages = this.#frames(addr, npages, bytes, opts.hugePage ?? false);
    const vma: Vma = { start: addr, length: bytes.length, pages, bytes };
    const at = this.#vmas.findIndex((v) => v.start > addr);
    this.#vmas.splice(at < 0 ? this.#vmas.length : at, 0, vma);
    return vma;
  }

  /** munmap() of a whole mapping; pinned frames stay allocated until unpinned. */
  munmap(start: bigint): number {
    const i = this.#vmas.findIndex((v) => v.start === start);
    if (i < 0) return -Errno.EINVAL;
    const [vma] = this.#vmas.splice(i, 1);
    for (const p of vma.pages) this.#phys.putPage(p.pfn);
    return 0;
  }

  /** find_vma(): the mapping containing `addr`, if any. */
  findVma(addr: bigint): Vma | undefined {
    for (const v of this.#vmas) {
      if (addr >= v.start && addr < v.start + BigInt(v.length)) return v;
    }
    return undefined;
  }

  /** Page-table walk (follow_page): frame and offset of `addr`, or undefined. */
  translate(addr: bigint): { page: Page; offset: number } | undefined {
    const v = this.findVma(addr);
    if (!v) return undefined;
    const rel = Number(addr - v.start);
    return { page: v.pages[rel >>> PAGE_SHIFT], offset: rel & (PAGE_SIZE - 1) };
  }

  /** access_ok() plus presence: every byte of [addr, addr+len) is mapped. */
  rangeMapped(addr: bigint, len: number): boolean {
    if (len === 0) return true;
    let a = addr;
    const end = addr + BigInt(len);
    while (a < end) {
      const v = this.findVma(a);
      if (!v) return false;
      a = v.start + BigInt(v.length);
    }
    return true;
  }

  /** Bytes of `[addr, addr + len)` mapped without a hole from `addr` on (where a copy faults). */
  mappedPrefix(addr: bigint, len: number): number {
    let a = addr;
    const end = addr + BigInt(len);
    while (a < end) {
      const v = this.findVma(a);
      if (!v) break;
      a = v.start + BigInt(v.length);
    }
    return Number((a < end ? a : end) - addr);
  }

  /**
   * The register guard's view (sim/uapi/register_rules.ts `UserMemory`): every
   * byte of `[addr, addr + len)` lies in a mapping. The sim's mappings are
   * exactly what the testbed handed out.
   */
  covers(addr: bigint, len: bigint): boolean {
    if (len < 0n || addr < 0n || addr + len > U64_LIMIT) return false;
    if (len > BigInt(Number.MAX_SAFE_INTEGER)) return false;
    return this.rangeMapped(addr, Number(len));
  }

  /** The register guard's read: a copy of `[addr, addr + len)`, or null on a fault. */
  read(addr: bigint, len: number): Uint8Array | null {
    const r = this.copyFromUser(addr, len);
    return typeof r === "number" ? null : r;
  }

  /**
   * pin_user_pages_fast(): pin every page of [addr, addr+len) for DMA.
   * Returns the frames or -EFAULT if any page is unmapped (nothing stays pinned).
   */
  pinUserPages(addr: bigint, len: number): PinnedRange | number {
    if (len <= 0) return -Errno.EINVAL;
    if (!this.rangeMapped(addr, len)) return -Errno.EFAULT;
    const first = addr & ~BigInt(PAGE_SIZE - 1);
    const offset = Number(addr - first);
    const npages = Math.ceil((offset + len) / PAGE_SIZE);
    const pages: Page[] = [];
    for (let i = 0; i < npages; i++) {
      const t = this.translate(first + BigInt(i * PAGE_SIZE))!;
      t.page.refcount++;
      t.page.pincount++;
      pages.push(t.page);
    }
    this.#stats?.add(COUNTER.pagesPinned, npages);
    return { pages, offset };
  }

  /** unpin_user_pages(): drop the pins taken by {@link UserMm.pinUserPages}. */
  unpinUserPages(pages: readonly Page[]): void {
    for (const p of pages) {
      if (p.pincount <= 0) throw new Error(`unpin_user_pages: pfn ${p.pfn} not pinned`);
      p.pincount--;
      this.#phys.putPage(p.pfn);
    }
    this.#stats?.add(COUNTER.pagesUnpinned, pages.length);
  }

  /** copy_from_user(): bytes at [addr, addr+len), or -EFAULT. */
  copyFromUser(addr: bigint, len: number): Uint8Array | number {
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const a = addr + BigInt(done);
      const v = this.findVma(a);
      if (!v) return -Errno.EFAULT;
      const rel = Number(a - v.start);
      const n = Math.min(v.length - rel, len - done);
      out.set(v.bytes.subarray(rel, rel + n), done);
      done += n;
    }
    return out;
  }

  /** copy_to_user(): write `src` at `addr`; 0 or -EFAULT (nothing written on fault). */
  copyToUser(addr: bigint, src: Uint8Array): number {
    if (!this.rangeMapped(addr, src.length)) return -Errno.EFAULT;
    let done = 0;
    while (done < src.length) {
      const a = addr + BigInt(done);
      const v = this.findVma(a)!;
      const rel = Number(a - v.start);
      const n = Math.min(v.length - rel, src.length - done);
      v.bytes.set(src.subarray(done, done + n), rel);
      done += n;
    }
    return 0;
  }
}
