/**
 * The DMA API over an IOMMU DMA domain (drivers/iommu/dma-iommu.c): every
 * mapping takes an IOVA range, writes PTEs, and on unmap clears them and
 * either invalidates the IOTLB at once (`strict`, iommu.strict=1) or queues
 * the range on a flush queue that one global IOTLB flush later retires
 * (`lazy`, iommu.strict=0); the IOVA is only reused after that flush.
 *
 * @module
 */

import { PAGE_MASK_LOW, PAGE_SIZE, pfnToPhys, type PhysMem } from "../memory/phys.ts";
import { COUNTER, type Stats } from "../stats.ts";
import { Errno } from "../uapi/errno.ts";
import { COHERENT_MAX_BYTES, coherentView, SIZE_MAX } from "./direct.ts";
import type { DeviceDmaLimits, DmaMapOps } from "./dma_map_ops.ts";
import { IOMMU_ADDR_WIDTH, IOMMU_READ, IOMMU_WRITE } from "./io_pgtable.ts";
import type { Iommu } from "./iommu.ts";
import { IovaDomain } from "./iova.ts";
import {
  type CoherentBuffer,
  DMA_MAPPING_ERROR,
  type DmaDir,
  DmaDirection,
  type Scatterlist,
} from "./types.ts";

/** IOVA_DEFAULT_FQ_SIZE: flush-queue ring slots. */
export const IOVA_DEFAULT_FQ_SIZE = 256;
/** Largest flush queue we accept. */
export const IOVA_MAX_FQ_SIZE = 1 << 16;
/** x86 IOAPIC/MSI window reserved in every DMA domain (IOAPIC_RANGE_START..END). */
export const IOAPIC_RANGE_START = 0xfee0_0000;
/** Last byte of the IOAPIC/MSI window. */
export const IOAPIC_RANGE_END = 0xfeef_ffff;

const SHIFT = 12n;

/** Options for {@link IommuDmaOps}. */
export interface IommuDmaOptions {
  /** iommu.strict=1: invalidate on every unmap; else queue (lazy). */
  strict: boolean;
  /** Flush-queue ring size; it holds one entry less. */
  flushQueueSize: number;
}

/** One deferred unmap (struct iova_fq_entry). */
interface FqEntry {
  iovaPfn: number;
  pages: number;
}

/** dma_info_to_prot() */
export function dmaInfoToProt(dir: DmaDir): number {
  switch (dir) {
    case DmaDirection.BIDIRECTIONAL:
      return IOMMU_READ | IOMMU_WRITE;
    case DmaDirection.TO_DEVICE:
      return IOMMU_READ;
    case DmaDirection.FROM_DEVICE:
      return IOMMU_WRITE;
  }
  throw new RangeError(`dma_info_to_prot: bad direction ${dir}`);
}

/** iova_align() for 4 KiB granules. */
function iovaAlign(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}

/** The dma-iommu backend (iommu_dma_ops) for one device's DMA domain. */
export class IommuDmaOps implements DmaMapOps {
  /** The domain's IOVA allocator. */
  readonly iovad: IovaDomain;
  readonly #phys: PhysMem;
  readonly #stats: Stats;
  readonly #iommu: Iommu;
  readonly #limits: DeviceDmaLimits;
  readonly #strict: boolean;
  readonly #fqCapacity: number;
  readonly #fq: FqEntry[] = [];
  readonly #coherent = new Map<number, CoherentBuffer>();

  /** iommu_dma_init_domain(): IOVA space from pfn 1, the IOAPIC window reserved. */
  constructor(
    phys: PhysMem,
    stats: Stats,
    iommu: Iommu,
    limits: DeviceDmaLimits,
    opts: IommuDmaOptions,
  ) {
    if (iommu.identity) throw new Error("iommu_dma: identity domain has no DMA ops");
    const fq = opts.flushQueueSize;
    if (!Number.isInteger(fq) || fq < 2 || fq > IOVA_MAX_FQ_SIZE || (fq & (fq - 1)) !== 0) {
      throw new RangeError(
        `iommu_dma: flush queue size ${fq} (power of 2, 2..${IOVA_MAX_FQ_SIZE})`,
      );
    }
    this.#phys = phys;
    this.#stats = stats;
    this.#iommu = iommu;
    this.#limits = limits;
    this.#strict = opts.strict;
    this.#fqCapacity = fq - 1;
    this.iovad = new IovaDomain(1);
    this.iovad.reserve(IOAPIC_RANGE_START >>> 12, IOAPIC_RANGE_END >>> 12);
  }

  /** Deferred unmaps waiting for the next global flush. */
  get flushQueueDepth(): number {
    return this.#fq.length;
  }

  /** iommu_dma_map_page() */
  mapPage(phys: bigint, size: number, dir: DmaDir): bigint {
    return this.#map(phys, size, dmaInfoToProt(dir));
  }

  /** iommu_dma_unmap_page() */
  unmapPage(addr: bigint, size: number, _dir: DmaDir): void {
    this.#unmap(addr, size);
  }

  /**
   * iommu_dma_map_sg(): one IOVA range for the whole list, then __finalise_sg()
   * concatenates segments as max segment size and boundary allow.
   */
  mapSg(sgl: Scatterlist[], nents: number, dir: DmaDir): number {
    const prot = dmaInfoToProt(dir);
    const mask = this.#limits.segmentBoundaryMask;
    const iovaOff: number[] = [];
    const iovaLenOf: number[] = [];
    let iovaLen = 0;
    for (let i = 0; i < nents; i++) {
      const s = sgl[i];
      const off = s.offset & PAGE_MASK_LOW;
      const sLength = iovaAlign(s.length + off);
      iovaOff.push(off);
      iovaLenOf.push(sLength);
      // Pad so that a segment that would cross the boundary starts on it instead.
      const pad = Number((mask - BigInt(iovaLen) + 1n) & mask);
      if (pad && pad < sLength - 1) {
        iovaLenOf[i - 1] += pad;
        iovaLen += pad;
      }
      iovaLen += sLength;
    }
    const iova = this.#allocIova(iovaLen);
    if (!iova) return -Errno.ENOMEM;
    // iommu_map_sg()
    let mapped = 0;
    for (let i = 0; i < nents; i++) {
      const s = sgl[i];
      const phys = pfnToPhys(s.page.pfn, s.offset - iovaOff[i]);
      const ret = this.#iommu.map(iova + BigInt(mapped), phys, iovaLenOf[i], prot);
      if (ret < 0) {
        if (mapped) {
          this.#iommu.unmap(iova, mapped);
          this.#iommu.iotlbSync(iova, mapped);
        }
        this.#freeIova(iova, iovaLen);
        return -Errno.EINVAL;
      }
      mapped += iovaLenOf[i];
    }
    return this.#finaliseSg(sgl, nents, iova, iovaOff, iovaLenOf);
  }

  /** iommu_dma_unmap_sg(): the list is one IOVA range, from the first segment to the last. */
  unmapSg(sgl: Scatterlist[], nents: number, _dir: DmaDir): void {
    let i = 0;
    for (; i < nents && sgl[i].dmaLength === 0; i++);
    if (i === nents) return;
    const start = sgl[i].dmaAddress;
    let end = 0n;
    for (; i < nents && sgl[i].dmaLength !== 0; i++) {
      end = sgl[i].dmaAddress + BigInt(sgl[i].dmaLength);
    }
    this.#unmap(start, Number(end - start));
  }

  /** Coherent device, no swiotlb: nothing to do. */
  syncForCpu(_addr: bigint, _size: number, _dir: DmaDir): void {}

  /** Coherent device, no swiotlb: nothing to do. */
  syncForDevice(_addr: bigint, _size: number, _dir: DmaDir): void {}

  /** iommu_dma_need_sync(): coherent and not bouncing. */
  needSync(_addr: bigint): boolean {
    return false;
  }

  /** iommu_dma_alloc(): contiguous pages mapped bidirectionally through the domain. */
  allocCoherent(size: number): CoherentBuffer | null {
    if (!Number.isInteger(size) || size <= 0 || size > COHERENT_MAX_BYTES) return null;
    const npages = Math.ceil(size / PAGE_SIZE);
    const pfn = this.#phys.allocContig(npages);
    const dma = this.#map(pfnToPhys(pfn), npages * PAGE_SIZE, IOMMU_READ | IOMMU_WRITE);
    if (dma === DMA_MAPPING_ERROR) {
      this.#phys.freeContig(pfn, npages);
      return null;
    }
    const buf = { cpu: coherentView(this.#phys, pfn, npages), pfn, npages, dma };
    this.#coherent.set(pfn, buf);
    return buf;
  }

  /** iommu_dma_free() */
  freeCoherent(buf: CoherentBuffer): void {
    const live = this.#coherent.get(buf.pfn);
    if (!live || live.dma !== buf.dma || live.npages !== buf.npages) {
      throw new Error(`dma_free_coherent: pfn ${buf.pfn} is not a live coherent buffer`);
    }
    this.#coherent.delete(buf.pfn);
    this.#unmap(buf.dma, buf.npages * PAGE_SIZE);
    this.#phys.freeContig(buf.pfn, buf.npages);
  }

  /** iommu_dma_max_mapping_size(): unbounded for a trusted device. */
  maxMappingSize(): number {
    return SIZE_MAX;
  }

  /** fq_flush_timeout(): the flush queue's timer, run now. */
  flushDeferred(): void {
    if (this.#fq.length > 0) this.#fqFlush();
  }

  /** Retire the flush queue and release coherent buffers still held. */
  [Symbol.dispose](): void {
    for (const buf of [...this.#coherent.values()]) this.freeCoherent(buf);
    this.flushDeferred();
  }

  /**
   * __finalise_sg(): write each output segment's DMA address and length,
   * concatenating an entry onto the previous segment when it starts on a
   * page, does not sit on a segment boundary, and keeps the segment within
   * the max segment size. Returns the number of DMA segments.
   */
  #finaliseSg(
    sgl: Scatterlist[],
    nents: number,
    iova: bigint,
    iovaOff: number[],
    iovaLenOf: number[],
  ): number {
    const segMask = this.#limits.segmentBoundaryMask;
    const maxLen = this.#limits.maxSegmentSize;
    let dmaAddr = iova;
    let cur = 0;
    let curLen = 0;
    let count = 0;
    for (let i = 0; i < nents; i++) {
      const s = sgl[i];
      const sIovaOff = iovaOff[i];
      const sLength = s.length;
      const sIovaLen = iovaLenOf[i];
      s.dmaAddress = DMA_MAPPING_ERROR;
      s.dmaLength = 0;
      if (curLen && !sIovaOff && (dmaAddr & segMask) !== 0n && maxLen - curLen >= sLength) {
        curLen += sLength;
      } else {
        if (i > 0) cur++;
        curLen = sLength;
        count++;
        sgl[cur].dmaAddress = dmaAddr + BigInt(sIovaOff);
      }
      sgl[cur].dmaLength = curLen;
      dmaAddr += BigInt(sIovaLen);
      if (sLength + sIovaOff < sIovaLen) curLen = 0;
    }
    return count;
  }

  /** __iommu_dma_map() */
  #map(phys: bigint, size: number, prot: number): bigint {
    const off = Number(phys & BigInt(PAGE_MASK_LOW));
    const len = iovaAlign(size + off);
    const iova = this.#allocIova(len);
    if (!iova) return DMA_MAPPING_ERROR;
    if (this.#iommu.map(iova, phys - BigInt(off), len, prot) < 0) {
      this.#freeIova(iova, len);
      return DMA_MAPPING_ERROR;
    }
    return iova + BigInt(off);
  }

  /** __iommu_dma_unmap(): clear PTEs, then invalidate now (strict) or queue (lazy). */
  #unmap(addr: bigint, size: number): void {
    const off = Number(addr & BigInt(PAGE_MASK_LOW));
    const iova = addr - BigInt(off);
    const len = iovaAlign(size + off);
    const unmapped = this.#iommu.unmap(iova, len);
    if (unmapped !== len) {
      throw new Error(
        `iommu_dma_unmap: 0x${addr.toString(16)}+${size}: ${unmapped} of ${len} bytes were mapped`,
      );
    }
    if (this.#strict) {
      this.#iommu.iotlbSync(iova, len);
      this.#freeIova(iova, len);
    } else {
      this.#queueIova(Number(iova >> SHIFT), len / PAGE_SIZE);
    }
  }

  /** iommu_dma_alloc_iova(): below 4 GiB first (SAC for PCI), then the full mask. */
  #allocIova(size: number): bigint {
    const pages = size / PAGE_SIZE;
    let dmaLimit = this.#limits.dmaMask;
    const aperture = (1n << BigInt(IOMMU_ADDR_WIDTH)) - 1n;
    if (dmaLimit > aperture) dmaLimit = aperture;
    let pfn = 0;
    if (dmaLimit > 0xffff_ffffn) pfn = this.iovad.allocFast(pages, 0xfffff, false);
    if (!pfn) pfn = this.iovad.allocFast(pages, Number(dmaLimit >> SHIFT), true);
    if (!pfn) return 0n;
    this.#stats.add(COUNTER.iovaAllocs);
    return BigInt(pfn) << SHIFT;
  }

  /** iommu_dma_free_iova() without a gather: straight back to the allocator. */
  #freeIova(iova: bigint, size: number): void {
    this.iovad.freeFast(Number(iova >> SHIFT), size / PAGE_SIZE);
    this.#stats.add(COUNTER.iovaFrees);
  }

  /** queue_iova(): flush first when the ring is full. */
  #queueIova(iovaPfn: number, pages: number): void {
    if (this.#fq.length >= this.#fqCapacity) this.#fqFlush();
    this.#fq.push({ iovaPfn, pages });
  }

  /** fq_flush_iotlb() + fq_ring_free(): one global invalidation, then the IOVAs are reusable. */
  #fqFlush(): void {
    this.#iommu.flushIotlbAll();
    for (const e of this.#fq) {
      this.iovad.freeFast(e.iovaPfn, e.pages);
      this.#stats.add(COUNTER.iovaFrees);
    }
    this.#fq.length = 0;
  }
}

/** Number of 4 KiB pages an sg list's IOMMU mapping spans (for tests and reports). */
export function sgIovaPages(sgl: Scatterlist[]): number {
  let n = 0;
  for (const s of sgl) n += iovaAlign(s.length + (s.offset & PAGE_MASK_LOW)) / PAGE_SIZE;
  return n;
}
