/**
 * The IOMMU's page table for one DMA domain: 4 levels of 512 entries, 4 KiB
 * pages, 48-bit IOVA (Intel VT-d second-level tables, drivers/iommu/intel/iommu.c
 * pfn_to_dma_pte(), __domain_mapping(), dma_pte_clear_range()).
 *
 * The table is bytes in kernel page frames, in the one layout both backends
 * share (and `ffi/native/nvme_emu.h` documents): each table page holds 512
 * little-endian 64-bit entries; IOVA bits 47:39, 38:30, 29:21 and 20:12 index
 * levels 4..1; an entry is present when bit 0 (read) or bit 1 (write) is set;
 * bits 51:12 hold the physical address of the next table page (levels 4..2,
 * written with both bits set) or of the target page (level 1). On `sim` the
 * TypeScript IOMMU walks these bytes; on `real` the C device walks the same
 * bytes through the frame table, so what one translates the other does too.
 *
 * @module
 */

import type { PhysMem } from "../memory/phys.ts";
import { COUNTER, type Stats } from "../stats.ts";

/** IOMMU_READ (include/linux/iommu.h): the device may read. */
export const IOMMU_READ = 1 << 0;
/** IOMMU_WRITE: the device may write. */
export const IOMMU_WRITE = 1 << 1;

/** Bits of IOVA the 4-level table translates. */
export const IOMMU_ADDR_WIDTH = 48;
/** Levels in the table. */
export const IOMMU_LEVELS = 4;
/** Index bits per level (LEVEL_STRIDE). */
const LEVEL_STRIDE = 9;
const LEVEL_SIZE = 1 << LEVEL_STRIDE;
/** Highest IOVA page frame number + 1. */
export const IOMMU_MAX_PFN = 2 ** (IOMMU_ADDR_WIDTH - 12);
/** DMA_PTE_READ | DMA_PTE_WRITE: the bits that make an entry present. */
const PTE_PRESENT_MASK = IOMMU_READ | IOMMU_WRITE;
/** Bits 51:12 of an entry, in units of 2^32 (the high word keeps bits 51:32). */
const PTE_ADDR_HIGH_MASK = 0x000f_ffff;
const TWO_20 = 2 ** 20;

/** A leaf entry (struct dma_pte): target frame and permissions. */
export interface DmaPte {
  /** Physical page frame the IOVA page maps to. */
  readonly pfn: number;
  /** IOMMU_READ | IOMMU_WRITE */
  readonly prot: number;
}

/** A 4-level I/O page table in kernel frames. */
export class IoPageTable implements Disposable {
  readonly #stats: Stats;
  readonly #phys: PhysMem;
  /** Table pages by pfn (root first), with a view for the host's writes. */
  readonly #pages = new Map<number, DataView>();
  /** pfn of the level-4 table page (the context entry's root). */
  readonly rootPfn: number;
  #present = 0;
  #disposed = false;

  /** An empty table: one zeroed root page from `phys`. */
  constructor(stats: Stats, phys: PhysMem) {
    this.#stats = stats;
    this.#phys = phys;
    this.rootPfn = this.#allocTablePage();
  }

  /** Physical address of the root table page (what the device is told). */
  get rootPa(): bigint {
    return BigInt(this.rootPfn) << 12n;
  }

  /** Table pages allocated (root included). */
  get tablePages(): number {
    return this.#pages.size;
  }

  /** Leaf entries present. */
  get presentPtes(): number {
    return this.#present;
  }

  /** pfn_to_dma_pte() + set: write one leaf; -1 if the IOVA is out of range or already mapped. */
  setPte(iovaPfn: number, pte: DmaPte): number {
    checkPfn(iovaPfn);
    if ((pte.prot & PTE_PRESENT_MASK) === 0) throw new RangeError("io_pgtable: PTE without R/W");
    let table = this.rootPfn;
    for (let level = IOMMU_LEVELS; level > 1; level--) {
      const v = this.#view(table);
      const off = levelIndex(iovaPfn, level) * 8;
      let next = readEntry(v, off);
      if (next === undefined) {
        const pfn = this.#allocTablePage();
        writeEntry(v, off, pfn, PTE_PRESENT_MASK);
        this.#stats.add(COUNTER.bytesAllocated, 4096);
        next = { pfn, prot: PTE_PRESENT_MASK };
      }
      table = next.pfn;
    }
    const v = this.#view(table);
    const off = levelIndex(iovaPfn, 1) * 8;
    if (readEntry(v, off) !== undefined) return -1;
    writeEntry(v, off, pte.pfn, pte.prot & PTE_PRESENT_MASK);
    this.#present++;
    this.#stats.add(COUNTER.iommuPteWrites);
    return 0;
  }

  /** dma_pte_clear_range() for one page; whether an entry was present. */
  clearPte(iovaPfn: number): boolean {
    checkPfn(iovaPfn);
    const leaf = this.#leafTable(iovaPfn);
    if (leaf === undefined) return false;
    const v = this.#view(leaf);
    const off = levelIndex(iovaPfn, 1) * 8;
    if (readEntry(v, off) === undefined) return false;
    // Present bits go first, so a concurrent walker never sees a half-cleared entry as present.
    v.setUint32(off, 0, true);
    v.setUint32(off + 4, 0, true);
    this.#present--;
    if (this.#present < 0) throw new Error("io_pgtable: present count underflow");
    this.#stats.add(COUNTER.iommuPteClears);
    return true;
  }

  /** The hardware walk, reading table bytes from physical memory: the leaf, if present. */
  walk(iovaPfn: number): DmaPte | undefined {
    const e = this.walkPacked(iovaPfn);
    return e < 0 ? undefined : unpackPte(e);
  }

  /**
   * {@link IoPageTable.walk} without allocation, for the device's hot path:
   * the leaf packed by {@link packPte}, or -1 when not present.
   */
  walkPacked(iovaPfn: number): number {
    if (!Number.isInteger(iovaPfn) || iovaPfn < 0 || iovaPfn >= IOMMU_MAX_PFN) return -1;
    let table = this.rootPfn;
    for (let level = IOMMU_LEVELS; level >= 1; level--) {
      const page = this.#phys.page(table);
      if (page === undefined) return -1; // a table pointer to no memory: a fault
      const e = readEntryBytes(page.data, levelIndex(iovaPfn, level) * 8);
      if (e < 0 || level === 1) return e;
      table = Math.floor(e / PACK_PROT);
    }
    return -1;
  }

  /** domain_exit(): free every table page. The table must be empty of leaves. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const pfn of this.#pages.keys()) this.#phys.freeContig(pfn, 1);
    this.#pages.clear();
  }

  #allocTablePage(): number {
    const pfn = this.#phys.allocContig(1);
    const page = this.#phys.page(pfn)!;
    page.data.fill(0);
    this.#pages.set(pfn, new DataView(page.data.buffer, page.data.byteOffset, 4096));
    return pfn;
  }

  #view(pfn: number): DataView {
    const v = this.#pages.get(pfn);
    if (v === undefined) throw new Error(`io_pgtable: pfn ${pfn} is not a table page`);
    return v;
  }

  #leafTable(iovaPfn: number): number | undefined {
    let table = this.rootPfn;
    for (let level = IOMMU_LEVELS; level > 1; level--) {
      const e = readEntry(this.#view(table), levelIndex(iovaPfn, level) * 8);
      if (e === undefined) return undefined;
      table = e.pfn;
    }
    return table;
  }
}

/** One entry: its frame and permission bits, or undefined when not present. */
function readEntry(v: DataView, off: number): DmaPte | undefined {
  const lo = v.getUint32(off, true);
  if ((lo & PTE_PRESENT_MASK) === 0) return undefined;
  const hi = v.getUint32(off + 4, true) & PTE_ADDR_HIGH_MASK;
  return { pfn: hi * TWO_20 + (lo >>> 12), prot: lo & PTE_PRESENT_MASK };
}

/** Packing of a present entry into one number: pfn * 4 + prot (pfn < 2^40, exact in a double). */
const PACK_PROT = 4;

/** A leaf as one number (what {@link IoPageTable.walkPacked} and the IOTLB hold). */
export function packPte(pfn: number, prot: number): number {
  return pfn * PACK_PROT + (prot & PTE_PRESENT_MASK);
}

/** The leaf a packed entry stands for. */
export function unpackPte(e: number): DmaPte {
  return { pfn: Math.floor(e / PACK_PROT), prot: e % PACK_PROT };
}

/** {@link readEntry} over the frame's bytes, packed; -1 when not present (little-endian). */
function readEntryBytes(d: Uint8Array, off: number): number {
  const lo = (d[off] | (d[off + 1] << 8) | (d[off + 2] << 16) | (d[off + 3] << 24)) >>> 0;
  if ((lo & PTE_PRESENT_MASK) === 0) return -1;
  const hi = (d[off + 4] | (d[off + 5] << 8) | (d[off + 6] << 16) | (d[off + 7] << 24)) &
    PTE_ADDR_HIGH_MASK;
  return packPte(hi * TWO_20 + (lo >>> 12), lo & PTE_PRESENT_MASK);
}

/** Store an entry: the address word first, then the word with the present bits. */
function writeEntry(v: DataView, off: number, pfn: number, prot: number): void {
  v.setUint32(off + 4, Math.floor(pfn / TWO_20) & PTE_ADDR_HIGH_MASK, true);
  v.setUint32(off, (((pfn % TWO_20) << 12) | prot) >>> 0, true);
}

/** 2^((level - 1) * LEVEL_STRIDE) by level: what an IOVA pfn is divided by to index a level. */
const LEVEL_DIVISOR = [0, 1, 2 ** LEVEL_STRIDE, 2 ** (2 * LEVEL_STRIDE), 2 ** (3 * LEVEL_STRIDE)];

function levelIndex(pfn: number, level: number): number {
  return Math.floor(pfn / LEVEL_DIVISOR[level]) % LEVEL_SIZE;
}

function checkPfn(pfn: number): void {
  if (!Number.isInteger(pfn) || pfn < 0 || pfn >= IOMMU_MAX_PFN) {
    throw new RangeError(
      `io_pgtable: IOVA pfn 0x${pfn.toString(16)} beyond ${IOMMU_ADDR_WIDTH} bits`,
    );
  }
}
