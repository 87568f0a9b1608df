/**
 * The DMA API seam (include/linux/dma-mapping.h, include/linux/scatterlist.h,
 * include/linux/dmapool.h). The nvme-pci driver reaches memory for DMA only
 * through {@link DmaApi}; the device reaches host memory only through a
 * {@link DeviceDmaPort}. Both are implemented over the simulated IOMMU in
 * `sim/dma/`, and can be implemented over native memory for the real backend.
 *
 * @module
 */

import type { Page } from "../memory/phys.ts";

/** The five DMA configurations the testbed models. */
export type IommuMode = "off" | "passthrough" | "lazy" | "strict" | "bounce";

/** All IOMMU modes, in display order. */
export const IOMMU_MODES: readonly IommuMode[] = ["off", "passthrough", "lazy", "strict", "bounce"];

/** enum dma_data_direction */
export const DmaDirection = { BIDIRECTIONAL: 0, TO_DEVICE: 1, FROM_DEVICE: 2 } as const;
/** A DMA direction value. */
export type DmaDir = typeof DmaDirection[keyof typeof DmaDirection];

/**
 * DMA_ATTR_SKIP_CPU_SYNC (include/linux/dma-mapping.h): the unmap leaves the
 * CPU's copy alone (a bounce buffer is not copied back): the driver already
 * synced what the device wrote.
 */
export const DMA_ATTR_SKIP_CPU_SYNC = 1 << 5;

/** DMA_MAPPING_ERROR: (dma_addr_t)~0 */
export const DMA_MAPPING_ERROR = 0xffff_ffff_ffff_ffffn;

/** struct scatterlist: one CPU-side segment and, once mapped, its DMA address/length. */
export interface Scatterlist {
  /** sg_page() */
  page: Page;
  /** offset within the page (may exceed a page for multi-page segments of contiguous frames). */
  offset: number;
  /** length in bytes */
  length: number;
  /** sg_dma_address(), valid after dma_map_sg for the first `nents` returned entries. */
  dmaAddress: bigint;
  /** sg_dma_len() */
  dmaLength: number;
}

/** A coherent allocation (dma_alloc_coherent): CPU view and bus address. */
export interface CoherentBuffer {
  /** CPU view of the memory (physically contiguous kernel frames). */
  cpu: Uint8Array;
  /** First pfn (for freeing). */
  pfn: number;
  /** Number of pages. */
  npages: number;
  /** Bus address the device uses. */
  dma: bigint;
}

/** A block from a dma_pool. */
export interface DmaPoolBlock {
  /** CPU view of the block. */
  cpu: Uint8Array;
  /** Bus address of the block. */
  dma: bigint;
}

/** struct dma_pool (mm/dmapool.c): fixed-size blocks carved from coherent pages. */
export interface DmaPool {
  /** Pool name, e.g. "prp list page". */
  readonly name: string;
  /** Block size. */
  readonly size: number;
  /** dma_pool_alloc(); null on exhaustion. */
  alloc(): DmaPoolBlock | null;
  /** dma_pool_free() */
  free(block: DmaPoolBlock): void;
  /** Blocks currently handed out. */
  readonly inUse: number;
}

/** The driver-side DMA API for one device. */
export interface DmaApi {
  /** The configuration in force. */
  readonly mode: IommuMode;
  /** dma_map_sg(): map entries; returns the number of DMA segments (may merge), 0 on failure. */
  mapSg(sgl: Scatterlist[], dir: DmaDir): number;
  /** dma_unmap_sg(): `nents` is the count passed to mapSg, not the one it returned. */
  unmapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): void;
  /** dma_map_page_attrs(): DMA address or {@link DMA_MAPPING_ERROR}. */
  mapPage(page: Page, offset: number, size: number, dir: DmaDir): bigint;
  /** dma_unmap_page_attrs() (`attrs`: DMA_ATTR_*, default none) */
  unmapPage(addr: bigint, size: number, dir: DmaDir, attrs?: number): void;
  /** dma_need_sync(): whether syncs are needed for this address (bounce buffering). */
  needSync(addr: bigint): boolean;
  /** dma_sync_single_for_cpu() */
  syncSingleForCpu(addr: bigint, size: number, dir: DmaDir): void;
  /** dma_sync_single_for_device() */
  syncSingleForDevice(addr: bigint, size: number, dir: DmaDir): void;
  /** dma_alloc_coherent(); null on failure. */
  allocCoherent(size: number): CoherentBuffer | null;
  /** dma_free_coherent() */
  freeCoherent(buf: CoherentBuffer): void;
  /** dma_pool_create() */
  createPool(
    name: string,
    size: number,
    align: number,
    boundary: number,
    maxPages?: number,
  ): DmaPool;
  /** dma_max_mapping_size(): bound on one mapping (swiotlb limits it when bouncing). */
  maxMappingSize(): number;
  /** Flush deferred IOTLB invalidations now (lazy mode's flush queue); no-op elsewhere. */
  flushDeferred(): void;
  /**
   * Bytes of streaming mappings (dma_map_page/dma_map_sg) live now: what the
   * device may reach besides coherent memory. Premapped buffers stay in it
   * between I/Os; per-I/O mappings only while their I/O runs.
   */
  readonly mappedBytes: number;
}

/** A DMA by the device that the IOMMU (or the bus) refused. */
export interface DmaFault {
  /** Bus address that faulted. */
  addr: bigint;
  /** Why: no translation, or the mapping does not allow this direction. */
  reason: "unmapped" | "permission" | "bad-address";
}

/**
 * The device side of DMA: every access the controller makes to host memory
 * goes through this port, which translates (IOMMU) and bounds-checks.
 */
export interface DeviceDmaPort {
  /** Read `len` bytes at bus address `addr` into a new array, or a fault (nothing read). */
  read(addr: bigint, len: number): Uint8Array | DmaFault;
  /** Read `dst.length` bytes at `addr` into `dst`, or a fault (nothing read, `dst` untouched). */
  readInto(addr: bigint, dst: Uint8Array): DmaFault | null;
  /** Write `data` at bus address `addr`, or return a fault (nothing written). */
  write(addr: bigint, data: Uint8Array): DmaFault | null;
  /**
   * Write `len` bytes at `addr` whose source fills them in place: after the
   * whole range has been checked, `fill(dst, pos)` is called for each piece
   * of host memory in order (`pos` its offset in the transfer) and must
   * write all of `dst`. A fault is returned before any call (nothing written).
   */
  writeWith(
    addr: bigint,
    len: number,
    fill: (dst: Uint8Array, pos: number) => void,
  ): DmaFault | null;
}

/** True if a device DMA result is a fault. */
export function isDmaFault(x: unknown): x is DmaFault {
  return typeof x === "object" && x !== null && "reason" in x && "addr" in x;
}
