/**
 * The IOMMU's page table for one DMA domain: 4 levels of 512 entries, 4 KiB
 * pages, 48-bit IOVA (Intel VT-d second-level tables, drivers/iommu/intel/iommu.c
 * pfn_to_dma_pte(), __domain_mapping(), dma_pte_clear_range()).
 *
 * @module
 */

import type { Stats } from "../stats.ts";

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

/** A leaf entry (struct dma_pte): target frame and permissions. */
export interface DmaPte {
  /** Physical page frame the IOVA page maps to. */
  readonly pfn: number;
  /** IOMMU_READ | IOMMU_WRITE */
  readonly prot: number;
}

type Table = (Table | DmaPte | undefined)[];

/** A 4-level I/O page table. */
export class IoPageTable {
  readonly #root: Table = new Array(LEVEL_SIZE);
  readonly #stats: Stats;
  #tablePages = 1;
  #present = 0;

  /** An empty table (one root page). */
  constructor(stats: Stats) {
    this.#stats = stats;
  }

  /** Table pages allocated (root included). */
  get tablePages(): number {
    return this.#tablePages;
  }

  /** Leaf entries present. */
  get presentPtes(): number {
    return this.#present;
  }

  /** pfn_to_dma_pte() + set: write one leaf; -1 if the IOVA is out of range or already mapped. */
  setPte(iovaPfn: number, pte: DmaPte): number {
    checkPfn(iovaPfn);
    let t = this.#root;
    for (let level = IOMMU_LEVELS; level > 1; level--) {
      const i = levelIndex(iovaPfn, level);
      let next = t[i] as Table | undefined;
      if (next === undefined) {
        next = new Array(LEVEL_SIZE);
        t[i] = next;
        this.#tablePages++;
        this.#stats.add("bytesAllocated", 4096);
      }
      t = next;
    }
    const i = levelIndex(iovaPfn, 1);
    if (t[i] !== undefined) return -1;
    t[i] = pte;
    this.#present++;
    this.#stats.add("iommuPteWrites");
    return 0;
  }

  /** dma_pte_clear_range() for one page; whether an entry was present. */
  clearPte(iovaPfn: number): boolean {
    checkPfn(iovaPfn);
    const t = this.#leafTable(iovaPfn);
    const i = levelIndex(iovaPfn, 1);
    if (!t || t[i] === undefined) return false;
    t[i] = undefined;
    this.#present--;
    if (this.#present < 0) throw new Error("io_pgtable: present count underflow");
    this.#stats.add("iommuPteClears");
    return true;
  }

  /** The hardware walk: the leaf for an IOVA page, if present. */
  walk(iovaPfn: number): DmaPte | undefined {
    if (!Number.isInteger(iovaPfn) || iovaPfn < 0 || iovaPfn >= IOMMU_MAX_PFN) return undefined;
    const t = this.#leafTable(iovaPfn);
    return t?.[levelIndex(iovaPfn, 1)] as DmaPte | undefined;
  }

  #leafTable(iovaPfn: number): Table | undefined {
    let t: Table | undefined = this.#root;
    for (let level = IOMMU_LEVELS; level > 1 && t; level--) {
      t = t[levelIndex(iovaPfn, level)] as Table | undefined;
    }
    return t;
  }
}

function levelIndex(pfn: number, level: number): number {
  return Math.floor(pfn / 2 ** ((level - 1) * LEVEL_STRIDE)) % LEVEL_SIZE;
}

function checkPfn(pfn: number): void {
  if (!Number.isInteger(pfn) || pfn < 0 || pfn >= IOMMU_MAX_PFN) {
    throw new RangeError(
      `io_pgtable: IOVA pfn 0x${pfn.toString(16)} beyond ${IOMMU_ADDR_WIDTH} bits`,
    );
  }
}
