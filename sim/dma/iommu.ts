/**
 * The IOMMU one device sits behind, with its domain: an identity domain
 * (`passthrough`) or a DMA domain with a 4-level page table and an IOTLB
 * (`lazy`, `strict`). The device port translates through
 * {@link Iommu.translatePage}; dma-iommu maps and unmaps through
 * {@link Iommu.map} / {@link Iommu.unmap} and invalidates the IOTLB.
 *
 * Mirrors drivers/iommu/iommu.c (iommu_map, iommu_unmap_fast,
 * iommu_iotlb_sync, iommu_flush_iotlb_all) over the Intel VT-d model.
 *
 * @module
 */

import { PAGE_MASK_LOW, PAGE_SHIFT, PAGE_SIZE, type PhysMem } from "../memory/phys.ts";
import { COUNTER, type Stats } from "../stats.ts";
import { Errno } from "../uapi/errno.ts";
import type { BusTranslator } from "./bus.ts";
import { IOMMU_MAX_PFN, IOMMU_READ, IOMMU_WRITE, IoPageTable } from "./io_pgtable.ts";
import { Iotlb } from "./iotlb.ts";
import type { DmaFault } from "./types.ts";

export { IOTLB_DEFAULT_ENTRIES } from "./iotlb.ts";
export { IOMMU_READ, IOMMU_WRITE } from "./io_pgtable.ts";

/** Faults kept for diagnostics (the fault recording registers are bounded too). */
export const IOMMU_FAULT_LOG = 64;

/**
 * An IOTLB the host does not own: the one inside a device that walks the
 * table itself (the real backend's C controller). Invalidations are posted
 * to it and, as with VT-d's queued invalidation (qi_submit_sync), the host
 * waits for the acknowledgement.
 */
export interface RemoteIotlb {
  /** Post a page-selective invalidation (`npages` 0: global); returns its sequence number. */
  post(iovaPfn: number, npages: number): bigint;
  /** Wait until `seq` is acknowledged; false on timeout. */
  wait(seq: bigint): boolean;
}

/** Options for {@link Iommu}. */
export interface IommuOptions {
  /** Identity domain (iommu.passthrough=1): every bus address is its physical address. */
  identity: boolean;
  /** IOTLB capacity. */
  iotlbEntries: number;
}

/** One IOMMU and the domain of the device behind it. */
export class Iommu implements BusTranslator, Disposable {
  /** Whether the domain is the identity domain. */
  readonly identity: boolean;
  /** The DMA domain's page table (unused by an identity domain). */
  readonly pgtable: IoPageTable;
  /** The translation cache. */
  readonly iotlb: Iotlb;
  /** Most recent faults, oldest first, at most {@link IOMMU_FAULT_LOG}. */
  readonly faultLog: DmaFault[] = [];
  readonly #stats: Stats;
  #remote: RemoteIotlb | undefined;

  /** An IOMMU with an empty domain whose table pages come from `phys`. */
  constructor(stats: Stats, phys: PhysMem, opts: IommuOptions) {
    this.identity = opts.identity;
    this.#stats = stats;
    this.pgtable = new IoPageTable(stats, phys);
    this.iotlb = new Iotlb(opts.iotlbEntries);
  }

  /** Attach the device-side IOTLB that every invalidation must also reach (real backend). */
  setRemoteIotlb(remote: RemoteIotlb | undefined): void {
    this.#remote = remote;
  }

  /** Free the domain's table pages. */
  [Symbol.dispose](): void {
    this.pgtable[Symbol.dispose]();
  }

  /** The device's access to one page: IOTLB first, then the table walk; faults counted. */
  translatePage(addr: bigint, write: boolean): bigint | DmaFault {
    const pfn = addr >> BigInt(PAGE_SHIFT);
    if (pfn >= BigInt(IOMMU_MAX_PFN) && !this.identity) return this.#fault(addr, "unmapped");
    const t = this.translatePfn(Number(pfn), Number(addr & BigInt(PAGE_MASK_LOW)), write);
    return typeof t === "number" ? BigInt(t) << BigInt(PAGE_SHIFT) : t;
  }

  /**
   * {@link Iommu.translatePage} by page frame number, for the device's hot
   * path: the same IOTLB lookup, walk, fill and checks, without BigInt or
   * allocation. `offset` (within the page) only names the faulting address.
   */
  translatePfn(busPfn: number, offset: number, write: boolean): number | DmaFault {
    if (this.identity) return busPfn;
    if (busPfn >= IOMMU_MAX_PFN) return this.#fault(pfnAddr(busPfn, offset), "unmapped");
    let e = this.iotlb.lookupPacked(busPfn);
    if (e < 0) {
      e = this.pgtable.walkPacked(busPfn);
      if (e < 0) return this.#fault(pfnAddr(busPfn, offset), "unmapped");
      this.iotlb.fillPacked(busPfn, e);
    }
    // packPte(): pfn * 4 + prot.
    if ((e % 4 & (write ? IOMMU_WRITE : IOMMU_READ)) === 0) {
      return this.#fault(pfnAddr(busPfn, offset), "permission");
    }
    return Math.floor(e / 4);
  }

  /** iommu_map(): map `size` bytes (page multiple) at `iova` to `phys`; 0 or a negative errno. */
  map(iova: bigint, phys: bigint, size: number, prot: number): number {
    if (this.identity) throw new Error("iommu_map: identity domain");
    const mask = BigInt(PAGE_MASK_LOW);
    if ((iova & mask) !== 0n || (phys & mask) !== 0n || size <= 0 || size % PAGE_SIZE !== 0) {
      return -Errno.EINVAL;
    }
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0) return -Errno.EINVAL;
    const iovaPfn = Number(iova >> BigInt(PAGE_SHIFT));
    const physPfn = Number(phys >> BigInt(PAGE_SHIFT));
    const n = size / PAGE_SIZE;
    if (iovaPfn + n > IOMMU_MAX_PFN) return -Errno.EFAULT;
    for (let i = 0; i < n; i++) {
      if (this.pgtable.setPte(iovaPfn + i, { pfn: physPfn + i, prot }) < 0) {
        // Already mapped: undo what this call mapped (iommu_map's unwind).
        for (let j = 0; j < i; j++) this.pgtable.clearPte(iovaPfn + j);
        return -Errno.EBUSY;
      }
    }
    return 0;
  }

  /** iommu_unmap_fast(): clear PTEs (no IOTLB invalidation); bytes unmapped. */
  unmap(iova: bigint, size: number): number {
    if (this.identity) throw new Error("iommu_unmap: identity domain");
    const iovaPfn = Number(iova >> BigInt(PAGE_SHIFT));
    const n = size / PAGE_SIZE;
    let unmapped = 0;
    for (let i = 0; i < n; i++) {
      if (!this.pgtable.clearPte(iovaPfn + i)) break;
      unmapped += PAGE_SIZE;
    }
    return unmapped;
  }

  /** iommu_iotlb_sync(): page-selective invalidation of the range just unmapped. */
  iotlbSync(iova: bigint, size: number): void {
    const pfn = Number(iova >> BigInt(PAGE_SHIFT));
    const npages = Math.ceil(size / PAGE_SIZE);
    this.iotlb.invalidateRange(pfn, npages);
    this.#stats.add(COUNTER.iotlbInvalidations);
    this.#remoteInvalidate(pfn, npages);
  }

  /** iommu_flush_iotlb_all(): global invalidation (the flush queue's flush). */
  flushIotlbAll(): void {
    this.iotlb.flushAll();
    this.#stats.add(COUNTER.iotlbFlushes);
    this.#remoteInvalidate(0, 0);
  }

  /** qi_submit_sync(): post and wait for the device's acknowledgement. */
  #remoteInvalidate(pfn: number, npages: number): void {
    const r = this.#remote;
    if (r === undefined) return;
    if (!r.wait(r.post(pfn, npages))) throw new Error("IOMMU: invalidation not acknowledged");
  }

  #fault(addr: bigint, reason: "unmapped" | "permission"): DmaFault {
    const f: DmaFault = { addr, reason };
    this.#stats.add(COUNTER.iommuFaults);
    this.faultLog.push(f);
    if (this.faultLog.length > IOMMU_FAULT_LOG) this.faultLog.shift();
    return f;
  }
}

/** The bus address of `offset` in page `pfn`. */
function pfnAddr(pfn: number, offset: number): bigint {
  return (BigInt(pfn) << BigInt(PAGE_SHIFT)) + BigInt(offset);
}
