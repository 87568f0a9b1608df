/**
 * dma-direct (kernel/dma/direct.c): bus address = physical address. Used with
 * no IOMMU (`off`), with the IOMMU's identity domain (`passthrough`: the
 * kernel gives such a device the direct ops too), and, with a forced
 * swiotlb, for bouncing (`bounce`).
 *
 * @module
 */

import { PAGE_SHIFT, PAGE_SIZE, pfnToPhys, type PhysMem } from "../memory/phys.ts";
import { Errno } from "../uapi/errno.ts";
import type { DeviceDmaLimits, DmaMapOps } from "./dma_map_ops.ts";
import type { Swiotlb } from "./swiotlb.ts";
import { type CoherentBuffer, DMA_MAPPING_ERROR, type DmaDir, type Scatterlist } from "./types.ts";

/** Largest coherent allocation (a bound): 4 MiB, MAX_PAGE_ORDER 10 on x86_64. */
export const COHERENT_MAX_BYTES = 4 << 20;

/** The dma-direct backend; `swiotlb` given means every mapping bounces (swiotlb=force). */
export class DirectOps implements DmaMapOps {
  readonly #phys: PhysMem;
  readonly #limits: DeviceDmaLimits;
  readonly #swiotlb: Swiotlb | undefined;
  readonly #coherent = new Map<number, number>();

  /** Direct ops for one device. */
  constructor(phys: PhysMem, limits: DeviceDmaLimits, swiotlb?: Swiotlb) {
    this.#phys = phys;
    this.#limits = limits;
    this.#swiotlb = swiotlb;
  }

  /** dma_direct_map_page() */
  mapPage(phys: bigint, size: number, dir: DmaDir): bigint {
    if (this.#swiotlb) {
      return this.#swiotlb.mapSingle(
        phys,
        size,
        dir,
        this.#limits.minAlignMask,
        this.#limits.segmentBoundaryMask,
      );
    }
    // dma_capable(): the whole range must be under the mask.
    if (phys + BigInt(size) - 1n > this.#limits.dmaMask) return DMA_MAPPING_ERROR;
    return phys;
  }

  /** dma_direct_unmap_page() */
  unmapPage(addr: bigint, size: number, dir: DmaDir, attrs = 0): void {
    if (this.#swiotlb?.contains(addr)) this.#swiotlb.unmapSingle(addr, size, dir, attrs);
  }

  /** dma_direct_map_sg(): one DMA segment per entry; -EIO after undoing on failure. */
  mapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): number {
    for (let i = 0; i < nents; i++) {
      const s = sgl[i];
      const addr = this.mapPage(pfnToPhys(s.page.pfn, s.offset), s.length, dir);
      if (addr === DMA_MAPPING_ERROR) {
        this.unmapSg(sgl, i, dir);
        return -Errno.EIO;
      }
      s.dmaAddress = addr;
      s.dmaLength = s.length;
    }
    return nents;
  }

  /** dma_direct_unmap_sg() */
  unmapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): void {
    for (let i = 0; i < nents; i++) this.unmapPage(sgl[i].dmaAddress, sgl[i].dmaLength, dir);
  }

  /** dma_direct_sync_single_for_cpu() */
  syncForCpu(addr: bigint, size: number, dir: DmaDir): void {
    if (this.#swiotlb?.contains(addr)) this.#swiotlb.syncForCpu(addr, size, dir);
  }

  /** dma_direct_sync_single_for_device() */
  syncForDevice(addr: bigint, size: number, dir: DmaDir): void {
    if (this.#swiotlb?.contains(addr)) this.#swiotlb.syncForDevice(addr, size, dir);
  }

  /** dma_direct_need_sync(): coherent device, so only bounce addresses need syncs. */
  needSync(addr: bigint): boolean {
    return this.#swiotlb?.contains(addr) ?? false;
  }

  /** dma_direct_alloc() */
  allocCoherent(size: number): CoherentBuffer | null {
    if (!Number.isInteger(size) || size <= 0 || size > COHERENT_MAX_BYTES) return null;
    const npages = Math.ceil(size / PAGE_SIZE);
    const pfn = this.#phys.allocContig(npages);
    const dma = pfnToPhys(pfn);
    if (dma + BigInt(npages * PAGE_SIZE) - 1n > this.#limits.dmaMask) {
      this.#phys.freeContig(pfn, npages);
      return null;
    }
    this.#coherent.set(pfn, npages);
    return { cpu: coherentView(this.#phys, pfn, npages), pfn, npages, dma };
  }

  /** dma_direct_free() */
  freeCoherent(buf: CoherentBuffer): void {
    if (this.#coherent.get(buf.pfn) !== buf.npages || buf.dma !== pfnToPhys(buf.pfn)) {
      throw new Error(`dma_free_coherent: pfn ${buf.pfn} is not a live coherent buffer`);
    }
    this.#coherent.delete(buf.pfn);
    this.#phys.freeContig(buf.pfn, buf.npages);
  }

  /** dma_direct_max_mapping_size() */
  maxMappingSize(): number {
    return this.#swiotlb ? this.#swiotlb.maxMappingSize(this.#limits.minAlignMask) : SIZE_MAX;
  }

  /** No deferred work in dma-direct. */
  flushDeferred(): void {}

  /** Free coherent buffers still held (driver leak at teardown). */
  [Symbol.dispose](): void {
    for (const [pfn, n] of this.#coherent) this.#phys.freeContig(pfn, n);
    this.#coherent.clear();
  }
}

/** SIZE_MAX as far as a JS number can say it. */
export const SIZE_MAX = Number.MAX_SAFE_INTEGER;

/**
 * The CPU view of `npages` contiguous kernel frames from PhysMem.allocContig:
 * their storage is one buffer, so the first frame's view widened covers all.
 */
export function coherentView(phys: PhysMem, pfn: number, npages: number): Uint8Array {
  const first = phys.page(pfn);
  if (!first) throw new Error(`coherentView: pfn ${pfn} not allocated`);
  const d = first.data;
  const view = new Uint8Array(d.buffer, d.byteOffset, npages * PAGE_SIZE);
  // Invariant: the widened view is exactly the frames' storage.
  const last = phys.page(pfn + npages - 1);
  if (!last || last.data.byteOffset !== d.byteOffset + (npages - 1) * PAGE_SIZE) {
    throw new Error(`coherentView: frames ${pfn}..${pfn + npages - 1} not contiguous`);
  }
  return view;
}

/** Pages spanned by `size` bytes starting `offset` into a page. */
export function pagesSpanned(offset: number, size: number): number {
  return ((offset & (PAGE_SIZE - 1)) + size + PAGE_SIZE - 1) >> PAGE_SHIFT;
}
