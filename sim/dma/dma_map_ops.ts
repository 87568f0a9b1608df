/**
 * The per-device DMA backend (include/linux/dma-map-ops.h, struct dma_map_ops):
 * what `dma_map_*()` in {@link ./mapping.ts} dispatches to. Three backends
 * implement it: dma-direct (`off`, `passthrough`), swiotlb (`bounce`) and
 * dma-iommu (`lazy`, `strict`).
 *
 * @module
 */

import type { CoherentBuffer, DmaDir, Scatterlist } from "./types.ts";

/** struct dma_map_ops, reduced to what the simulated host uses. */
export interface DmaMapOps {
  /** .map_page: DMA address of `size` bytes at physical `phys`, or DMA_MAPPING_ERROR. */
  mapPage(phys: bigint, size: number, dir: DmaDir): bigint;
  /** .unmap_page (`attrs`: DMA_ATTR_*) */
  unmapPage(addr: bigint, size: number, dir: DmaDir, attrs?: number): void;
  /** .map_sg: number of DMA segments, or a negative errno (nothing left mapped). */
  mapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): number;
  /** .unmap_sg */
  unmapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): void;
  /** .sync_single_for_cpu */
  syncForCpu(addr: bigint, size: number, dir: DmaDir): void;
  /** .sync_single_for_device */
  syncForDevice(addr: bigint, size: number, dir: DmaDir): void;
  /** dma_need_sync() for this backend. */
  needSync(addr: bigint): boolean;
  /** .alloc (dma_alloc_coherent) */
  allocCoherent(size: number): CoherentBuffer | null;
  /** .free */
  freeCoherent(buf: CoherentBuffer): void;
  /** .max_mapping_size */
  maxMappingSize(): number;
  /** Run deferred IOTLB invalidations (dma-iommu flush queue); no-op elsewhere. */
  flushDeferred(): void;
  /** Tear down: release every resource the backend holds. */
  [Symbol.dispose](): void;
}

/** Device DMA limits (struct device dma_mask, dma_parms). */
export interface DeviceDmaLimits {
  /** dma_get_mask(): highest bus address the device can drive. */
  dmaMask: bigint;
  /** dma_get_max_seg_size() */
  maxSegmentSize: number;
  /** dma_get_seg_boundary() */
  segmentBoundaryMask: bigint;
  /** dma_get_min_align_mask() */
  minAlignMask: number;
}

/** DMA_BIT_MASK(n) */
export function dmaBitMask(n: number): bigint {
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new RangeError(`DMA_BIT_MASK: bad width ${n}`);
  return (1n << BigInt(n)) - 1n;
}

/** valid_dma_direction() */
export function validDmaDirection(dir: number): boolean {
  return dir === 0 || dir === 1 || dir === 2;
}
