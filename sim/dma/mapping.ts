/**
 * The DMA API a driver calls (kernel/dma/mapping.c): argument checks,
 * counters, and dispatch to the backend the IOMMU configuration selects.
 * {@link createDma} builds the whole DMA setup of one device: the driver's
 * {@link DmaApi}, the device's {@link DeviceDmaPort}, and the IOMMU between them.
 *
 * @example
 * ```ts
 * import { Kernel } from "../kernel.ts";
 * import { createDma } from "./mapping.ts";
 * using dma = createDma(new Kernel({ seed: 1 }), { mode: "strict" });
 * const buf = dma.api.allocCoherent(4096)!;
 * dma.port.write(buf.dma, new Uint8Array([1, 2, 3]));
 * dma.api.freeCoherent(buf);
 * ```
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import type { Page } from "../memory/phys.ts";
import { pfnToPhys } from "../memory/phys.ts";
import { createDevicePort } from "./bus.ts";
import { DmaDebug } from "./debug.ts";
import { DirectOps } from "./direct.ts";
import {
  type DeviceDmaLimits,
  dmaBitMask,
  type DmaMapOps,
  validDmaDirection,
} from "./dma_map_ops.ts";
import { DmaPoolImpl, type PoolBackend } from "./dmapool.ts";
import { IommuDmaOps } from "./dma_iommu.ts";
import { Iommu, IOTLB_DEFAULT_ENTRIES } from "./iommu.ts";
import { IOVA_DEFAULT_FQ_SIZE } from "./dma_iommu.ts";
import { Swiotlb } from "./swiotlb.ts";
import type {
  CoherentBuffer,
  DeviceDmaPort,
  DmaApi,
  DmaDir,
  DmaPool,
  IommuMode,
  Scatterlist,
} from "./types.ts";
import { DMA_MAPPING_ERROR, IOMMU_MODES } from "./types.ts";
import { COUNTER } from "../stats.ts";

export type { DeviceDmaPort, DmaApi, IommuMode } from "./types.ts";
export { DmaDebug } from "./debug.ts";
export { Iommu } from "./iommu.ts";

/** Default swiotlb size: 32768 slots of 2 KiB (64 MiB, the kernel's default). */
export const SWIOTLB_DEFAULT_SLOTS = 32768;
/** Largest sg list one dma_map_sg call accepts (a limit; NVMe's is 128 + 1). */
export const DMA_MAX_SG_ENTRIES = 4096;

/** How to build a device's DMA setup. */
export interface DmaOptions {
  /** IOMMU configuration. */
  mode: IommuMode;
  /** lazy: flush-queue size (ring slots; one stays empty), default 256 (IOVA_DEFAULT_FQ_SIZE). */
  flushQueueSize?: number;
  /** bounce: swiotlb slots (2 KiB IO_TLB_SIZE each), default 32768. */
  swiotlbSlots?: number;
  /** DMA mask width in bits: default 64, or 32 in bounce mode (the device that needs it). */
  dmaMaskBits?: number;
  /**
   * dma_set_max_seg_size(): default 0xffffffff, what nvme_pci_alloc_dev() sets
   * (a PCI device without it gets 64 KiB).
   */
  maxSegmentSize?: number;
  /** dma_set_seg_boundary(): default 0xffffffff (PCI's default; nvme-pci leaves it). */
  segmentBoundaryMask?: bigint;
  /** dma_set_min_align_mask(): default 0xfff, what nvme-pci sets (NVME_CTRL_PAGE_SIZE - 1). */
  minAlignMask?: number;
  /** lazy/strict/passthrough: IOTLB entries (a bounded cache), default 128. */
  iotlbEntries?: number;
  /**
   * CONFIG_DMA_API_DEBUG: record every mapping and check unmaps, syncs,
   * leaks at teardown and the device's accesses (default true).
   */
  debug?: boolean;
  /** Device name in debug reports (default "dma0"). */
  device?: string;
}

/** A device's DMA setup: driver API, device port, and the IOMMU if one is in the path. */
export interface Dma extends Disposable {
  /** The driver's DMA API. */
  api: DmaApi;
  /** The device's access to host memory. */
  port: DeviceDmaPort;
  /** The IOMMU (passthrough, lazy, strict). */
  iommu?: Iommu;
  /** The DMA-API debug checker, unless turned off. */
  debug: DmaDebug | undefined;
  /** The bounce pool (bounce mode), with its warnings. */
  swiotlb?: Swiotlb;
}

/** Build the DMA setup of one device on `kernel` in the given mode. */
export function createDma(kernel: Kernel, opts: DmaOptions): Dma {
  if (!IOMMU_MODES.includes(opts.mode)) throw new RangeError(`createDma: bad mode ${opts.mode}`);
  const limits: DeviceDmaLimits = {
    dmaMask: dmaBitMask(opts.dmaMaskBits ?? (opts.mode === "bounce" ? 32 : 64)),
    maxSegmentSize: opts.maxSegmentSize ?? 0xffff_ffff,
    segmentBoundaryMask: opts.segmentBoundaryMask ?? 0xffff_ffffn,
    minAlignMask: opts.minAlignMask ?? 0xfff,
  };
  checkLimits(limits);
  const stats = kernel.stats;
  let iommu: Iommu | undefined;
  let swiotlb: Swiotlb | undefined;
  let ops: DmaMapOps;
  switch (opts.mode) {
    case "off":
      ops = new DirectOps(kernel.phys, limits);
      break;
    case "passthrough":
      iommu = new Iommu(stats, kernel.phys, {
        identity: true,
        iotlbEntries: opts.iotlbEntries ?? IOTLB_DEFAULT_ENTRIES,
      });
      ops = new DirectOps(kernel.phys, limits);
      break;
    case "bounce":
      swiotlb = new Swiotlb(
        kernel.phys,
        stats,
        opts.swiotlbSlots ?? SWIOTLB_DEFAULT_SLOTS,
        limits.minAlignMask,
      );
      ops = new DirectOps(kernel.phys, limits, swiotlb);
      break;
    case "lazy":
    case "strict":
      iommu = new Iommu(stats, kernel.phys, {
        identity: false,
        iotlbEntries: opts.iotlbEntries ?? IOTLB_DEFAULT_ENTRIES,
      });
      ops = new IommuDmaOps(kernel.phys, stats, iommu, limits, {
        strict: opts.mode === "strict",
        flushQueueSize: opts.flushQueueSize ?? IOVA_DEFAULT_FQ_SIZE,
      });
      break;
  }
  const pools = new Set<DmaPoolImpl>();
  const debug = (opts.debug ?? true) ? new DmaDebug(opts.device ?? "dma0", stats) : undefined;
  const api = new DmaMappingApi(opts.mode, ops, kernel, pools, debug);
  const port = createDevicePort(
    kernel.phys,
    iommu,
    debug && ((addr, len, write) => debug.deviceAccess(addr, len, write)),
  );
  let disposed = false;
  return {
    api,
    port,
    iommu,
    debug,
    swiotlb,
    [Symbol.dispose]() {
      if (disposed) return;
      disposed = true;
      for (const p of pools) p.release();
      // The device is going away: what the driver still has mapped is a leak.
      debug?.checkLeaks();
      ops[Symbol.dispose]();
      swiotlb?.[Symbol.dispose]();
      iommu?.[Symbol.dispose]();
    },
  };
}

function checkLimits(l: DeviceDmaLimits): void {
  if (!Number.isInteger(l.maxSegmentSize) || l.maxSegmentSize < 4096) {
    throw new RangeError(`createDma: maxSegmentSize ${l.maxSegmentSize} below a page`);
  }
  const b = l.segmentBoundaryMask + 1n;
  if (b < 4096n || (b & (b - 1n)) !== 0n) {
    throw new RangeError(`createDma: segmentBoundaryMask 0x${l.segmentBoundaryMask.toString(16)}`);
  }
  const a = l.minAlignMask + 1;
  if (!Number.isInteger(l.minAlignMask) || l.minAlignMask < 0 || (a & (a - 1)) !== 0 || a > 4096) {
    throw new RangeError(`createDma: minAlignMask ${l.minAlignMask}`);
  }
}

/** The dma_* entry points of kernel/dma/mapping.c over one backend. */
class DmaMappingApi implements DmaApi {
  readonly mode: IommuMode;
  readonly #ops: DmaMapOps;
  readonly #kernel: Kernel;
  readonly #pools: Set<DmaPoolImpl>;
  readonly #debug: DmaDebug | undefined;
  /** Where pools get their pages: the backend, seen by the debug checker. */
  readonly #poolBackend: PoolBackend;
  /** Live streaming mappings by handle: their sizes (for {@link DmaMappingApi.mappedBytes}). */
  readonly #live = new Map<bigint, number>();
  #mappedBytes = 0;

  /** Bytes of live streaming mappings. */
  get mappedBytes(): number {
    return this.#mappedBytes;
  }

  #track(handle: bigint, size: number): void {
    const old = this.#live.get(handle);
    if (old !== undefined) this.#mappedBytes -= old;
    this.#live.set(handle, size);
    this.#mappedBytes += size;
  }

  #untrack(handle: bigint): void {
    const old = this.#live.get(handle);
    if (old === undefined) return; // unmapped by another handle (the posted premap unmap)
    this.#live.delete(handle);
    this.#mappedBytes -= old;
  }

  constructor(
    mode: IommuMode,
    ops: DmaMapOps,
    kernel: Kernel,
    pools: Set<DmaPoolImpl>,
    debug: DmaDebug | undefined,
  ) {
    this.mode = mode;
    this.#ops = ops;
    this.#kernel = kernel;
    this.#pools = pools;
    this.#debug = debug;
    this.#poolBackend = debug
      ? {
        allocCoherent: (size) => {
          const buf = ops.allocCoherent(size);
          if (buf) debug.allocCoherent(buf, size);
          return buf;
        },
        freeCoherent: (buf) => {
          debug.freeCoherent(buf);
          ops.freeCoherent(buf);
        },
      }
      : ops;
  }

  /** dma_map_sg_attrs() */
  mapSg(sgl: Scatterlist[], dir: DmaDir): number {
    checkDir(dir);
    const stats = this.#kernel.stats;
    stats.add(COUNTER.dmaMapSgCalls);
    stats.add(COUNTER.sgEntries, sgl.length);
    if (sgl.length === 0 || sgl.length > DMA_MAX_SG_ENTRIES) return 0;
    for (const s of sgl) {
      if (
        !Number.isInteger(s.offset) || s.offset < 0 || !Number.isInteger(s.length) || s.length <= 0
      ) {
        return 0;
      }
    }
    const ents = this.#ops.mapSg(sgl, sgl.length, dir);
    if (ents <= 0) return 0;
    for (let i = 0; i < ents; i++) this.#track(sgl[i].dmaAddress, sgl[i].dmaLength);
    this.#debug?.mapSg(sgl, sgl.length, ents, dir);
    return ents;
  }

  /** dma_unmap_sg_attrs() */
  unmapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): void {
    checkDir(dir);
    if (!Number.isInteger(nents) || nents <= 0 || nents > sgl.length) {
      throw new RangeError(`dma_unmap_sg: nents ${nents} for a list of ${sgl.length}`);
    }
    this.#kernel.stats.add(COUNTER.dmaUnmapSgCalls);
    for (let i = 0; i < nents; i++) this.#untrack(sgl[i].dmaAddress);
    this.#debug?.unmapSg(sgl, nents, dir);
    this.#ops.unmapSg(sgl, nents, dir);
  }

  /** dma_map_page_attrs() */
  mapPage(page: Page, offset: number, size: number, dir: DmaDir): bigint {
    checkDir(dir);
    this.#kernel.stats.add(COUNTER.dmaMapPageCalls);
    if (!Number.isInteger(offset) || offset < 0 || !Number.isInteger(size) || size <= 0) {
      return DMA_MAPPING_ERROR;
    }
    const phys = pfnToPhys(page.pfn, offset);
    const addr = this.#ops.mapPage(phys, size, dir);
    if (addr !== DMA_MAPPING_ERROR) this.#track(addr, size);
    this.#debug?.mapPage(addr, phys, size, dir);
    return addr;
  }

  /** dma_unmap_page_attrs() */
  unmapPage(addr: bigint, size: number, dir: DmaDir, attrs = 0): void {
    checkDir(dir);
    this.#debug?.unmapPage(addr, size, dir);
    if (addr === DMA_MAPPING_ERROR) throw new Error("dma_unmap_page: DMA_MAPPING_ERROR");
    this.#kernel.stats.add(COUNTER.dmaUnmapPageCalls);
    this.#untrack(addr);
    this.#ops.unmapPage(addr, size, dir, attrs);
  }

  /** dma_need_sync() */
  needSync(addr: bigint): boolean {
    return this.#ops.needSync(addr);
  }

  /** dma_sync_single_for_cpu() */
  syncSingleForCpu(addr: bigint, size: number, dir: DmaDir): void {
    checkDir(dir);
    this.#kernel.stats.add(COUNTER.dmaSyncs);
    this.#debug?.sync(addr, size, dir, true);
    this.#ops.syncForCpu(addr, size, dir);
  }

  /** dma_sync_single_for_device() */
  syncSingleForDevice(addr: bigint, size: number, dir: DmaDir): void {
    checkDir(dir);
    this.#kernel.stats.add(COUNTER.dmaSyncs);
    this.#debug?.sync(addr, size, dir, false);
    this.#ops.syncForDevice(addr, size, dir);
  }

  /** dma_alloc_attrs() */
  allocCoherent(size: number): CoherentBuffer | null {
    const buf = this.#poolBackend.allocCoherent(size);
    if (buf) this.#kernel.stats.add(COUNTER.bytesAllocated, buf.npages * 4096);
    return buf;
  }

  /** dma_free_attrs() */
  freeCoherent(buf: CoherentBuffer): void {
    this.#poolBackend.freeCoherent(buf);
  }

  /** dma_pool_create() */
  createPool(
    name: string,
    size: number,
    align: number,
    boundary: number,
    maxPages?: number,
  ): DmaPool {
    const pool = new DmaPoolImpl(
      this.#poolBackend,
      this.#kernel.stats,
      name,
      size,
      align,
      boundary,
      maxPages,
    );
    this.#pools.add(pool);
    return pool;
  }

  /** dma_max_mapping_size() */
  maxMappingSize(): number {
    return this.#ops.maxMappingSize();
  }

  /** Flush the IOTLB flush queue now (what its 10 ms timer would do). */
  flushDeferred(): void {
    this.#ops.flushDeferred();
  }
}

/** BUG_ON(!valid_dma_direction(dir)) */
function checkDir(dir: number): void {
  if (!validDmaDirection(dir)) throw new RangeError(`DMA API: invalid direction ${dir}`);
}
