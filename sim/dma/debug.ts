/**
 * The DMA-API debug checker (kernel/dma/debug.c, CONFIG_DMA_API_DEBUG): every
 * mapping the driver makes is recorded as a {@link DmaDebugEntry} (device,
 * handle, size, direction, type, sg counts), and every unmap, free and sync
 * is checked against the record with the kernel's rules and in the kernel's
 * words (`check_unmap()`, `check_sync()`, the leak check of
 * `dma_debug_device_change()`).
 *
 * One check the kernel cannot make is added: the device's accesses. The
 * device port reports every read and write that reaches memory, and an
 * access to bus addresses no live mapping covers is a
 * `device-unmapped-access` event counted with its bytes (a device using a
 * handle after its unmap, with no IOMMU to stop it).
 *
 * Each report is an event in a bounded log plus a per-kind counter (and the
 * host's `dmaDebugErrors` / `dmaDebugDeviceUnmappedBytes` counters); the
 * checker never throws, so a run goes on and a test asserts on the counts.
 *
 * @example
 * ```ts
 * import { Stats } from "../stats.ts";
 * import { DmaDebug } from "./debug.ts";
 * import { DmaDirection } from "./types.ts";
 * const dbg = new DmaDebug("nvme0", new Stats());
 * dbg.mapPage(0x1000n, 0x1000n, 512, DmaDirection.FROM_DEVICE);
 * dbg.unmapPage(0x1000n, 4096, DmaDirection.FROM_DEVICE);
 * console.log(dbg.counts["free-size"]); // 1
 * ```
 *
 * @module
 */

import { COUNTER, type Stats } from "../stats.ts";
import { type CoherentBuffer, DMA_MAPPING_ERROR, type DmaDir, type Scatterlist } from "./types.ts";

/** Events kept in {@link DmaDebug.events} (older ones drop out; the counters keep counting). */
export const DMA_DEBUG_MAX_EVENTS = 256;
/** Unmapped entries remembered (a ring) to name double unmaps and use-after-unmap. */
export const DMA_DEBUG_MAX_REMEMBERED = 4096;

const PAGE_SHIFT = 12n;
const PAGE_BYTES = 4096n;

/** type2name[]: how a mapping was made (dma_debug_single, _sg, _coherent). */
export type DmaDebugType = "single" | "scatter-gather" | "coherent";

/** dir2name[] */
export const DMA_DIR_NAMES = ["DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE"] as const;

/** What a report is about; each has a counter in {@link DmaDebug.counts}. */
export const DMA_DEBUG_KINDS = [
  /** check_unmap(): no mapping at this handle. */
  "free-not-allocated",
  /** check_unmap() on DMA_MAPPING_ERROR. */
  "free-invalid-address",
  /** The handle was mapped and already unmapped (the kernel words it as not-allocated). */
  "double-free",
  /** check_unmap(): size differs from the map. */
  "free-size",
  /** check_unmap(): unmapped with another function (unmap_page of an sg entry ...). */
  "free-type",
  /** check_unmap(): coherent free with another CPU address. */
  "free-cpu-address",
  /** check_unmap(): unmap_sg with another nents than the map_sg call. */
  "free-sg-count",
  /** check_unmap(): direction differs from the map. */
  "free-direction",
  /** check_sync(): no mapping holds the address. */
  "sync-not-allocated",
  /** check_sync(): the sync runs past the mapping's end. */
  "sync-outside-range",
  /** check_sync(): direction differs from the map. */
  "sync-direction",
  /** check_sync(): for_cpu on memory the device only reads. */
  "sync-read-only-for-cpu",
  /** check_sync(): for_device on memory the device only writes. */
  "sync-write-only-to-device",
  /** Teardown with mappings never unmapped (one event per mapping). */
  "leak",
  /** The device read or wrote bus addresses no live mapping covers, and it reached memory. */
  "device-unmapped-access",
] as const;

/** One report kind. */
export type DmaDebugKind = typeof DMA_DEBUG_KINDS[number];

/** struct dma_debug_entry: one live mapping. */
export interface DmaDebugEntry {
  /** dev */
  readonly device: string;
  /** dev_addr: the DMA handle. */
  readonly handle: bigint;
  /** size in bytes */
  readonly size: number;
  /** direction */
  readonly direction: DmaDir;
  /** type */
  readonly type: DmaDebugType;
  /** paddr: physical address of the first byte. */
  readonly paddr: bigint;
  /** sg_call_ents: nents passed to dma_map_sg (0 otherwise). */
  readonly sgCallEnts: number;
  /** sg_mapped_ents: segments dma_map_sg returned (0 otherwise). */
  readonly sgMappedEnts: number;
}

/** One report. */
export interface DmaDebugEvent {
  /** What went wrong. */
  kind: DmaDebugKind;
  /** The device. */
  device: string;
  /** The DMA handle (bus address) concerned. */
  handle: bigint;
  /** Bytes concerned (the caller's size; for a device access, the uncovered bytes). */
  size: number;
  /** The caller's direction, where there is one. */
  direction: DmaDir | undefined;
  /** The kernel's message (`DMA-API: <device>: ...`). */
  message: string;
}

/** A live entry with its bus page range and end precomputed (the hot paths use them). */
interface Live extends DmaDebugEntry {
  /** First bus page number. */
  readonly first: number;
  /** Last bus page number. */
  readonly last: number;
  /** handle + size */
  readonly end: bigint;
}

/** A mapping as the caller names it at unmap or sync time. */
interface Ref {
  handle: bigint;
  size: number | undefined;
  direction: DmaDir;
  type: DmaDebugType;
  paddr: bigint | undefined;
  sgCallEnts: number;
}

const hex = (a: bigint): string => `0x${a.toString(16).padStart(16, "0")}`;

/** The debug state of one device's DMA setup. */
export class DmaDebug {
  /** Device name in every entry and message. */
  readonly device: string;
  /** Reports, oldest first, at most {@link DMA_DEBUG_MAX_EVENTS}. */
  readonly events: DmaDebugEvent[] = [];
  /** Reports per kind since creation (not bounded by the log). */
  readonly counts: Record<DmaDebugKind, number> = Object.fromEntries(
    DMA_DEBUG_KINDS.map((k) => [k, 0]),
  ) as Record<DmaDebugKind, number>;
  /** Bytes of device accesses to unmapped bus addresses that reached memory. */
  deviceUnmappedBytes = 0;
  /**
   * Where device accesses arrive from when the device reports them after the
   * fact (the real backend's C controller traces them into a ring): called
   * before every unmap, free and leak check, so each access is judged against
   * the mappings live when it was made, and it feeds {@link DmaDebug.deviceAccess}.
   */
  deviceAccessSource: (() => void) | undefined;
  readonly #stats: Stats | undefined;
  /** dma_entry_hash: live entries by handle. */
  readonly #byHandle = new Map<bigint, Live[]>();
  /** Live entries by every bus page they touch, for syncs and device accesses. */
  readonly #byPage = new Map<number, Live[]>();
  /** Recently unmapped entries, a ring (searched only when reporting). */
  readonly #freed: (Live | undefined)[] = new Array(DMA_DEBUG_MAX_REMEMBERED);
  #freedNext = 0;
  #live = 0;

  /** A checker for `device`, bumping `stats` counters when given. */
  constructor(device: string, stats?: Stats) {
    this.device = device;
    this.#stats = stats;
  }

  /** Live mappings. */
  get liveMappings(): number {
    return this.#live;
  }

  /** Every report since creation (error_count). */
  get errorCount(): number {
    let n = 0;
    for (const k of DMA_DEBUG_KINDS) n += this.counts[k];
    return n;
  }

  // ----------------------------------------------------------- map side

  /** debug_dma_map_page(): record a single mapping (not when the map failed). */
  mapPage(handle: bigint, paddr: bigint, size: number, dir: DmaDir): void {
    if (handle === DMA_MAPPING_ERROR) return;
    this.#add(handle, size, dir, "single", paddr, 0, 0);
  }

  /** debug_dma_map_sg(): one entry per DMA segment returned. */
  mapSg(sgl: readonly Scatterlist[], nents: number, mappedEnts: number, dir: DmaDir): void {
    for (let i = 0; i < mappedEnts; i++) {
      const s = sgl[i];
      const paddr = (BigInt(s.page.pfn) << PAGE_SHIFT) + BigInt(s.offset);
      this.#add(s.dmaAddress, s.dmaLength, dir, "scatter-gather", paddr, nents, mappedEnts);
    }
  }

  /** debug_dma_alloc_coherent() */
  allocCoherent(buf: CoherentBuffer, size: number): void {
    this.#add(buf.dma, size, 0, "coherent", BigInt(buf.pfn) << PAGE_SHIFT, 0, 0);
  }

  // --------------------------------------------------------- unmap side

  /** debug_dma_unmap_page() */
  unmapPage(handle: bigint, size: number, dir: DmaDir): void {
    this.#checkUnmap({
      handle,
      size,
      direction: dir,
      type: "single",
      paddr: undefined,
      sgCallEnts: 0,
    });
  }

  /** debug_dma_unmap_sg(): each segment of the map, as many as it returned. */
  unmapSg(sgl: readonly Scatterlist[], nelems: number, dir: DmaDir): void {
    let mappedEnts = 0;
    for (let i = 0; i < nelems; i++) {
      if (mappedEnts && i >= mappedEnts) break;
      const s = sgl[i];
      const ref: Ref = {
        handle: s.dmaAddress,
        size: s.dmaLength,
        direction: dir,
        type: "scatter-gather",
        paddr: undefined,
        sgCallEnts: nelems,
      };
      if (i === 0) mappedEnts = this.#findExact(ref)?.sgMappedEnts ?? 0;
      this.#checkUnmap(ref);
    }
  }

  /** debug_dma_free_coherent() (our free carries no size: the size is not compared). */
  freeCoherent(buf: CoherentBuffer): void {
    this.#checkUnmap({
      handle: buf.dma,
      size: undefined,
      direction: 0,
      type: "coherent",
      paddr: BigInt(buf.pfn) << PAGE_SHIFT,
      sgCallEnts: 0,
    });
  }

  /** debug_dma_sync_single_for_cpu() / _for_device(): check_sync(). */
  sync(handle: bigint, size: number, dir: DmaDir, toCpu: boolean): void {
    const entry = this.#findContaining(handle);
    const at = (): string => `[device address=${hex(handle)}]`;
    if (!entry) {
      this.#report(
        "sync-not-allocated",
        handle,
        size,
        dir,
        `device driver tries to sync DMA memory it has not allocated ${at()} [size=${size} bytes]`,
      );
      return;
    }
    const end = handle - entry.handle + BigInt(size);
    if (handle + BigInt(size) > entry.end) {
      this.#report(
        "sync-outside-range",
        handle,
        size,
        dir,
        `device driver syncs DMA memory outside allocated range [device address=${
          hex(entry.handle)
        }] [allocation size=${entry.size} bytes] [sync offset+size=${end}]`,
      );
    }
    if (entry.direction === 0) return;
    const dirs = (): string =>
      `[mapped with ${DMA_DIR_NAMES[entry.direction]}] [synced with ${DMA_DIR_NAMES[dir]}]`;
    if (dir !== entry.direction) {
      this.#report(
        "sync-direction",
        handle,
        size,
        dir,
        `device driver syncs DMA memory with different direction ${at()} [size=${entry.size} bytes] ${dirs()}`,
      );
    }
    if (toCpu && entry.direction !== 2 && dir !== 1) {
      this.#report(
        "sync-read-only-for-cpu",
        handle,
        size,
        dir,
        `device driver syncs device read-only DMA memory for cpu ${at()} [size=${entry.size} bytes] ${dirs()}`,
      );
    }
    if (!toCpu && entry.direction !== 1 && dir !== 2) {
      this.#report(
        "sync-write-only-to-device",
        handle,
        size,
        dir,
        `device driver syncs device write-only DMA memory to device ${at()} [size=${entry.size} bytes] ${dirs()}`,
      );
    }
  }

  /**
   * dma_debug_device_change(BUS_NOTIFY_UNBOUND_DRIVER): the device goes away
   * with mappings still live. One `leak` event per mapping; returns how many.
   */
  checkLeaks(): number {
    this.deviceAccessSource?.();
    const leaked: DmaDebugEntry[] = [];
    for (const list of this.#byHandle.values()) leaked.push(...list);
    for (const e of leaked) {
      this.#report(
        "leak",
        e.handle,
        e.size,
        e.direction,
        `device driver has pending DMA allocations while released from device [count=${leaked.length}] ` +
          `One of leaked entries details: [device address=${
            hex(e.handle)
          }] [size=${e.size} bytes] ` +
          `[mapped with ${DMA_DIR_NAMES[e.direction]}] [mapped as ${e.type}]`,
      );
    }
    return leaked.length;
  }

  // ------------------------------------------------------- device side

  /**
   * A device access of `len` bytes at bus address `addr` that reached memory:
   * report the bytes no live mapping covers. Returns those bytes.
   */
  deviceAccess(addr: bigint, len: number, write: boolean): number {
    if (len <= 0) return 0;
    const end = addr + BigInt(len);
    const first = Number(addr >> PAGE_SHIFT);
    // Fast path: one live entry on the first page covers the whole access.
    const l0 = this.#byPage.get(first);
    if (l0) {
      for (const e of l0) if (e.handle <= addr && e.end >= end) return 0;
    }
    let uncovered = 0;
    let firstUncovered = -1n;
    const last = Number((end - 1n) >> PAGE_SHIFT);
    for (let p = first; p <= last; p++) {
      const base = BigInt(p) << PAGE_SHIFT;
      const lo = addr > base ? addr : base;
      const hi = end < base + PAGE_BYTES ? end : base + PAGE_BYTES;
      const n = uncoveredIn(this.#byPage.get(p), lo, hi);
      if (n.bytes > 0 && firstUncovered < 0n) firstUncovered = n.first;
      uncovered += n.bytes;
    }
    if (uncovered === 0) return 0;
    this.deviceUnmappedBytes += uncovered;
    this.#stats?.add(COUNTER.dmaDebugDeviceUnmappedBytes, uncovered);
    const was = this.#lastFreed((e) => e.handle <= firstUncovered && firstUncovered < e.end);
    const history = was
      ? ` [unmapped: was ${was.type} ${DMA_DIR_NAMES[was.direction]} at ${
        hex(was.handle)
      } size=${was.size}]`
      : " [never mapped]";
    this.#report(
      "device-unmapped-access",
      firstUncovered,
      uncovered,
      undefined,
      `device ${write ? "write to" : "read from"} unmapped DMA address [device address=${
        hex(firstUncovered)
      }] [access=${hex(addr)}+${len}] [unmapped bytes=${uncovered}]${history}`,
    );
    return uncovered;
  }

  // ----------------------------------------------------------- internals

  /** add_dma_entry() */
  #add(
    handle: bigint,
    size: number,
    direction: DmaDir,
    type: DmaDebugType,
    paddr: bigint,
    sgCallEnts: number,
    sgMappedEnts: number,
  ): void {
    const end = handle + BigInt(size);
    const e: Live = {
      device: this.device,
      handle,
      size,
      direction,
      type,
      paddr,
      sgCallEnts,
      sgMappedEnts,
      first: Number(handle >> PAGE_SHIFT),
      last: Number((size > 0 ? end - 1n : handle) >> PAGE_SHIFT),
      end,
    };
    const list = this.#byHandle.get(e.handle);
    if (list) list.push(e);
    else this.#byHandle.set(e.handle, [e]);
    this.#live++;
    for (let p = e.first; p <= e.last; p++) {
      const pl = this.#byPage.get(p);
      if (pl) pl.push(e);
      else this.#byPage.set(p, [e]);
    }
  }

  #remove(e: Live): void {
    const list = this.#byHandle.get(e.handle)!;
    if (list.length === 1) this.#byHandle.delete(e.handle);
    else list.splice(list.indexOf(e), 1);
    this.#live--;
    for (let p = e.first; p <= e.last; p++) {
      const pl = this.#byPage.get(p)!;
      if (pl.length === 1) this.#byPage.delete(p);
      else pl.splice(pl.indexOf(e), 1);
    }
    this.#freed[this.#freedNext] = e;
    this.#freedNext = (this.#freedNext + 1) % DMA_DEBUG_MAX_REMEMBERED;
  }

  /** The most recently unmapped entry that `match` accepts (reports only: a linear scan). */
  #lastFreed(match: (e: Live) => boolean): Live | undefined {
    const n = DMA_DEBUG_MAX_REMEMBERED;
    for (let i = 1; i <= n; i++) {
      const e = this.#freed[(this.#freedNext - i + n) % n];
      if (e === undefined) return undefined;
      if (match(e)) return e;
    }
    return undefined;
  }

  /** __hash_bucket_find(exact_match): the one entry, or among several the perfect fit. */
  #findExact(ref: Ref): Live | undefined {
    const list = this.#byHandle.get(ref.handle);
    if (!list) return undefined;
    if (list.length === 1) return list[0];
    for (const e of list) {
      if (
        (ref.size === undefined || e.size === ref.size) && e.type === ref.type &&
        e.direction === ref.direction && e.sgCallEnts === ref.sgCallEnts
      ) {
        return e;
      }
    }
    return undefined; // several matches, none perfect: the kernel gives up too
  }

  /** bucket_find_contain(): a live entry holding `handle`. */
  #findContaining(handle: bigint): Live | undefined {
    const list = this.#byPage.get(Number(handle >> PAGE_SHIFT));
    return list?.find((e) => e.handle <= handle && handle < e.end);
  }

  /** check_unmap() */
  #checkUnmap(ref: Ref): void {
    this.deviceAccessSource?.();
    const entry = this.#findExact(ref);
    const size = ref.size ?? 0;
    if (!entry) {
      const at = `[device address=${hex(ref.handle)}]`;
      if (ref.handle === DMA_MAPPING_ERROR) {
        this.#report(
          "free-invalid-address",
          ref.handle,
          size,
          ref.direction,
          "device driver tries to free an invalid DMA memory address",
        );
        return;
      }
      const was = this.#lastFreed((e) => e.handle === ref.handle);
      this.#report(
        was ? "double-free" : "free-not-allocated",
        ref.handle,
        size,
        ref.direction,
        `device driver tries to free DMA memory it has not allocated ${at} [size=${size} bytes]` +
          (was ? ` (already unmapped: ${was.type}, size=${was.size})` : ""),
      );
      return;
    }
    const at = (): string => `[device address=${hex(ref.handle)}]`;
    if (ref.size !== undefined && ref.size !== entry.size) {
      this.#report(
        "free-size",
        ref.handle,
        size,
        ref.direction,
        `device driver frees DMA memory with different size ${at()} [map size=${entry.size} bytes] [unmap size=${size} bytes]`,
      );
    }
    if (ref.type !== entry.type) {
      this.#report(
        "free-type",
        ref.handle,
        size,
        ref.direction,
        `device driver frees DMA memory with wrong function ${at()} [size=${size} bytes] [mapped as ${entry.type}] [unmapped as ${ref.type}]`,
      );
    } else if (
      entry.type === "coherent" && ref.paddr !== undefined && ref.paddr !== entry.paddr
    ) {
      this.#report(
        "free-cpu-address",
        ref.handle,
        size,
        ref.direction,
        `device driver frees DMA memory with different CPU address ${at()} [size=${size} bytes] [cpu alloc address=0x${
          entry.paddr.toString(16)
        }] [cpu free address=0x${ref.paddr.toString(16)}]`,
      );
    }
    if (ref.sgCallEnts && ref.type === "scatter-gather" && ref.sgCallEnts !== entry.sgCallEnts) {
      this.#report(
        "free-sg-count",
        ref.handle,
        size,
        ref.direction,
        `device driver frees DMA sg list with different entry count [map count=${entry.sgCallEnts}] [unmap count=${ref.sgCallEnts}]`,
      );
    }
    if (ref.direction !== entry.direction) {
      this.#report(
        "free-direction",
        ref.handle,
        size,
        ref.direction,
        `device driver frees DMA memory with different direction ${at()} [size=${size} bytes] [mapped with ${
          DMA_DIR_NAMES[entry.direction]
        }] [unmapped with ${DMA_DIR_NAMES[ref.direction]}]`,
      );
    }
    this.#remove(entry);
  }

  /** err_printk(): count, log (bounded), never throw. */
  #report(
    kind: DmaDebugKind,
    handle: bigint,
    size: number,
    direction: DmaDir | undefined,
    what: string,
  ): void {
    this.counts[kind]++;
    this.#stats?.add(COUNTER.dmaDebugErrors);
    if (this.events.length >= DMA_DEBUG_MAX_EVENTS) this.events.shift();
    this.events.push({
      kind,
      device: this.device,
      handle,
      size,
      direction,
      message: `DMA-API: ${this.device}: ${what}`,
    });
  }
}

/** Bytes of [lo, hi) (within one page) that no entry of `list` covers, and the first of them. */
function uncoveredIn(
  list: readonly Live[] | undefined,
  lo: bigint,
  hi: bigint,
): { bytes: number; first: bigint } {
  if (!list || list.length === 0) return { bytes: Number(hi - lo), first: lo };
  const spans = list
    .map((e) => [e.handle, e.end] as const)
    .filter(([s, t]) => s < hi && t > lo)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let pos = lo;
  let bytes = 0n;
  let first = -1n;
  for (const [s, t] of spans) {
    if (s > pos) {
      if (first < 0n) first = pos;
      bytes += s - pos;
    }
    if (t > pos) pos = t;
    if (pos >= hi) break;
  }
  if (pos < hi) {
    if (first < 0n) first = pos;
    bytes += hi - pos;
  }
  return { bytes: Number(bytes), first };
}
