/**
 * The testbed surface both backends implement: memory the ring can see,
 * files, and rings. `openTestbed` in `mod.ts` picks the implementation.
 *
 * @module
 */

import type { Ring, UserBuffer } from "./ring_api.ts";
import type { IommuMode } from "../dma/types.ts";
import type { Stats } from "../stats.ts";
import type { PremapVariant } from "../kernel.ts";
import type { NvmeFaultKind, NvmeFaultRule } from "../device/faults.ts";
import type { SparseMedia } from "../device/media.ts";
import type { PowerCutReport } from "../device/write_cache.ts";

export type { PremapVariant };
import { IORING_SETUP, PARAMS } from "./io_uring.ts";

/** Which stack runs under the application ring. */
export type Backend = "sim" | "real";

/** A namespace of the simulated NVMe controller. */
export interface NamespaceOptions {
  /** LBA data size in bytes. */
  lbaSize: 512 | 4096;
  /** Capacity in bytes (a multiple of lbaSize). */
  sizeBytes: bigint;
}

/** Options for `openTestbed`. */
export interface TestbedOptions {
  /** "sim" (default): the TypeScript kernel mirror; "real": the live kernel io_uring. */
  backend?: Backend;
  /** Seed for every random choice of the sim backend (default 1). */
  seed?: number;
  /** Whether the process holds CAP_SYS_ADMIN for MAP/UNMAP_BUFFERS (default true). */
  capSysAdmin?: boolean;
  /** DMA configuration of the simulated host (default "strict", as intel_iommu=on). */
  iommu?: IommuMode;
  /** Namespaces of the simulated controller (default one 1 GiB namespace, 4 KiB LBAs). */
  namespaces?: NamespaceOptions[];
  /** Whether the nvme driver implements dma_map (default true). */
  dmaMapSupported?: boolean;
  /**
   * Transfer limits of the NVMe path: the controller's MDTS (log2 of its largest
   * transfer in 4 KiB pages, 1..12; default 5, 128 KiB) and the namespace queue's
   * max_sectors_kb as written through sysfs (4 KiB .. max_hw_sectors_kb, which is
   * min(4096, MDTS); default min(max_hw_sectors_kb, 1280); else an ErrnoError -EINVAL).
   */
  nvmeLimits?: { mdts?: number; maxSectorsKb?: number };
  /**
   * Which variant of the proposal runs (default "v2", as posted; "v3"; or
   * "hardened", the project's safe variant): see {@link PremapVariant}.
   */
  premap?: PremapVariant;
  /**
   * The posted series' uninitialised reads, forced on or off (default: each
   * on in the variant that posted it): `v2UninitRemaining` (v2's PRP copy
   * counter), `v3UninitIndex` (v3's nvme_premapped_slow index), and
   * `v1PageShift` (v1's pages-per-host-page shift, off unless asked for).
   */
  premapBugs?: { v1PageShift?: boolean; v2UninitRemaining?: boolean; v3UninitIndex?: boolean };
  /**
   * The host's block and DMA tunables: `swiotlbSlots` (bounce mode: 2 KiB
   * slots, default 32768 = 64 MiB), `ioTimeoutNs` (nvme io_timeout, default
   * 30 s) and `hungTimeoutNs` (how long a request may wait for a resource
   * before it is reported hung and failed with -ETIMEDOUT, default 120 s, the
   * hung-task check's). Times are on the kernel's clock: virtual on sim.
   */
  hostLimits?: { swiotlbSlots?: number; ioTimeoutNs?: number; hungTimeoutNs?: number };
  /**
   * rlimit(RLIMIT_NOFILE) of the simulated process: its descriptors and its
   * fixed file table are bounded by it (-EMFILE). Default on `sim`: 1024; on
   * `real`, the host stack always takes the process's own soft limit, as the
   * live kernel does.
   */
  rlimitNofile?: number;
  /** Whether to time each stage (default true). */
  timing?: boolean;
  /**
   * CONFIG_DMA_API_DEBUG on the NVMe controller's DMA setup (default true):
   * reports land in the `dmaDebugErrors` and `dmaDebugDeviceUnmappedBytes` counters.
   */
  dmaDebug?: boolean;
  /**
   * real: how the C controller runs: "thread" (default), a device thread that
   * polls its doorbells and sleeps when idle; "inline", stepped by the host
   * while it waits (deterministic).
   */
  device?: "thread" | "inline";
  /** real: media files per namespace (default: files in the testbed's temporary directory). */
  mediaPaths?: string[];
  /** real: keep the media in process memory instead of files. */
  mediaInMemory?: boolean;
  /** real: set false for a ring without the emulated namespace (default: with it, when built). */
  nvme?: boolean;
  /**
   * Fault rules the NVMe controller holds from the start, before the driver
   * probes it (so `admin-fail` rules can hit Identify and queue creation).
   * Add more later with {@link Testbed.nvmeFaults}.
   */
  faults?: NvmeFaultRule[];
  /**
   * A volatile write cache in the NVMe controller (default false): Identify
   * VWC is set, so fsync sends Flush; writes complete into the cache until
   * Flush, FUA, eviction or shutdown, and {@link Testbed.powerCut} can lose them.
   */
  volatileWriteCache?: boolean;
  /** Capacity of that cache in bytes (default 4 MiB; a multiple of 1024, 4 KiB..256 MiB). */
  writeCacheBytes?: number;
  /**
   * sim: the namespaces' media to start from, one per namespace, each of its
   * namespace's size: an earlier testbed's `powerCut(seed).media` (on real,
   * reopen a namespace through `mediaPaths`).
   */
  media?: readonly SparseMedia[];
}

/** Fault injection on a testbed's NVMe controller (see `sim/device/faults.ts`). */
export interface NvmeFaultControl {
  /** Add a rule (RangeError when it is invalid or 64 are live). */
  add(rule: NvmeFaultRule): void;
  /** Remove every rule (the counts stay). */
  clear(): void;
  /** Faults injected so far, by kind. */
  readonly injected: Record<NvmeFaultKind, number>;
}

/** What {@link Testbed.powerCut} did, and where the surviving data is. */
export interface PowerCutResult extends PowerCutReport {
  /** sim: each namespace's persistent media, for `openTestbed({ media })`. */
  media?: SparseMedia[];
  /** real: the media files (the `mediaPaths` the testbed was opened with), to reopen. */
  mediaPaths?: string[];
}

/** Options for a ring. */
export interface RingOptions {
  /** SQ entries (rounded up to a power of two like the kernel). */
  entries: number;
  /** IORING_SETUP_* flags. */
  flags?: number;
  /** CQ entries (with IORING_SETUP_CQSIZE). */
  cqEntries?: number;
}

/** The clocks an io_uring timeout can run on (IORING_TIMEOUT_BOOTTIME / _REALTIME, else monotonic). */
export type TimeoutClock = "monotonic" | "boottime" | "realtime";

/** A testbed: one application's view of one host. */
export interface Testbed extends Disposable {
  /** The backend in use. */
  readonly backend: Backend;
  /** The seed (sim) or 0 (real). */
  readonly seed: number;
  /** Per-I/O counters of the simulated host (sim only; undefined on real). */
  readonly stats: Stats | undefined;
  /** Path of the NVMe namespace block device, if this backend has one. */
  readonly nvmeDevice: string | undefined;
  /**
   * Bytes of the NVMe host's live streaming DMA mappings (premapped buffers
   * between I/Os, per-I/O mappings while their I/O runs), if it has a host.
   */
  readonly dmaMappedBytes: number | undefined;
  /** Page-aligned memory the ring can address; freed on dispose. */
  allocBuffer(len: number): UserBuffer;
  /** open(2): a file descriptor or a negative errno. */
  open(path: string, flags: number, mode?: number): number;
  /** close(2): 0 or a negative errno. */
  close(fd: number): number;
  /** A path for a scratch regular file of this testbed (removed on dispose). */
  tempPath(name: string): string;
  /** Read a whole regular file by path (for checking contents after I/O). */
  readFile(path: string): Uint8Array;
  /**
   * clock_gettime(2) on the clock the host's io_uring timeouts use, in ns
   * (an absolute IORING_TIMEOUT_ABS expiry is this plus a delay): the
   * virtual clock on `sim`, the live kernel's clocks on `real`.
   */
  clockNs(clock: TimeoutClock): bigint;
  /** A new ring. Throws an ErrnoError if setup fails (use `ringRaw` to see the errno). */
  ring(opts: RingOptions): Ring;
  /** Fault injection on the NVMe controller (undefined when there is no emulated namespace). */
  readonly nvmeFaults: NvmeFaultControl | undefined;
  /**
   * Cut the NVMe controller's power: the volatile write cache loses a seeded
   * subset of its unflushed writes (at least one when any exist; nothing
   * without a cache), the rest reaches the media, and the controller is dead
   * (CSTS reads 0, it processes nothing again: I/O on its namespace no longer
   * completes, so dispose the testbed). Reopen the namespace with the
   * returned `media` (sim) or the same `mediaPaths` (real). Throws when there
   * is no emulated namespace.
   */
  powerCut(seed: number): PowerCutResult;
}

/** struct io_uring_params for `opts`: flags, and CQSIZE with cq_entries when asked. */
export function ringParams(opts: RingOptions): Uint8Array {
  const params = new Uint8Array(PARAMS.SIZE);
  const v = new DataView(params.buffer);
  let flags = opts.flags ?? 0;
  if (opts.cqEntries !== undefined) {
    flags |= IORING_SETUP.CQSIZE;
    v.setUint32(PARAMS.cqEntries, opts.cqEntries, true);
  }
  v.setUint32(PARAMS.flags, flags, true);
  return params;
}

/**
 * What a testbed handed out and must release on dispose if the user did not:
 * `adopt` makes a resource's own dispose remove it from the set (and run
 * once); `disposeAll` releases the rest, newest first.
 */
export class Handouts {
  readonly #items = new Set<Disposable>();

  /** Track `x`; its `[Symbol.dispose]` now runs at most once and untracks it. */
  adopt<T extends Disposable>(x: T): T {
    const items = this.#items;
    const dispose = x[Symbol.dispose].bind(x);
    const wrapped = () => {
      if (items.delete(x)) dispose();
    };
    Object.defineProperty(x, Symbol.dispose, { value: wrapped, configurable: true });
    items.add(x);
    return x;
  }

  /** Dispose everything still tracked, in reverse order of adoption. */
  disposeAll(): void {
    for (const x of [...this.#items].reverse()) x[Symbol.dispose]();
  }
}
