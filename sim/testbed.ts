/**
 * The `sim` backend's testbed: a simulated kernel (memory, fd table, files),
 * the io_uring mirror as the application ring, and an NVMe namespace at
 * `/dev/nvme0n1` behind the simulated host stack. Needs no Deno permission.
 *
 * @module
 */

import { Kernel } from "./kernel.ts";
import { attachNvme, type NvmeHost } from "./host.ts";
import { SimRing } from "./io_uring/io_uring.ts";
import { doSysOpen, lookupInode, sysClose, sysUnlink } from "./fs/namei.ts";
import { Errno, ErrnoError } from "./uapi/errno.ts";
import { Ring, type UserBuffer } from "./uapi/ring_api.ts";
import {
  Handouts,
  type NvmeFaultControl,
  type PowerCutResult,
  type RingOptions,
  ringParams,
  type Testbed,
  type TestbedOptions,
  type TimeoutClock,
} from "./uapi/testbed.ts";
import type { Stats } from "./stats.ts";

/** Open a testbed on the simulated host. */
export function openSimTestbed(opts: TestbedOptions = {}): SimTestbed {
  return new SimTestbed(opts);
}

/** The sim testbed; `kernel` and `host` are there for inspection (examples, tests). */
export class SimTestbed implements Testbed {
  /** Always "sim". */
  readonly backend = "sim" as const;
  /** The seed. */
  readonly seed: number;
  /** The simulated kernel (memory, counters, devices). */
  readonly kernel: Kernel;
  /** The NVMe controller, its driver and DMA setup. */
  readonly host: NvmeHost;
  readonly #rings = new Handouts();
  readonly #buffers = new Handouts();
  readonly #temps = new Set<string>();
  #closed = false;

  /** Build a simulated host from the options. */
  constructor(opts: TestbedOptions) {
    this.seed = opts.seed ?? 1;
    this.kernel = new Kernel({
      seed: this.seed,
      capSysAdmin: opts.capSysAdmin ?? true,
      timing: opts.timing ?? true,
      premap: opts.premap,
      nofile: opts.rlimitNofile,
    });
    this.host = attachNvme(this.kernel, {
      iommu: opts.iommu ?? "strict",
      namespaces: opts.namespaces,
      dmaMapSupported: opts.dmaMapSupported ?? true,
      dmaDebug: opts.dmaDebug,
      mdts: opts.nvmeLimits?.mdts,
      maxSectorsKb: opts.nvmeLimits?.maxSectorsKb,
      bugs: opts.premapBugs,
      swiotlbSlots: opts.hostLimits?.swiotlbSlots,
      ioTimeoutNs: opts.hostLimits?.ioTimeoutNs,
      hungTimeoutNs: opts.hostLimits?.hungTimeoutNs,
      volatileWriteCache: opts.volatileWriteCache,
      writeCacheBytes: opts.writeCacheBytes,
      faults: opts.faults,
      media: opts.media,
    });
    const ctrl = this.host.controller!;
    this.nvmeFaults = {
      add: (rule) => ctrl.addFault(rule),
      clear: () => ctrl.clearFaults(),
      get injected() {
        return ctrl.faultsInjected;
      },
    };
  }

  /** Fault injection on the TypeScript NVMe controller. */
  readonly nvmeFaults: NvmeFaultControl;

  /** Cut the controller's power; `media` reopens the namespaces in a new testbed. */
  powerCut(seed: number): PowerCutResult {
    this.#live();
    const ctrl = this.host.controller!;
    const r = ctrl.powerCut(seed);
    return { ...r, media: ctrl.detachMedia() };
  }

  /** Per-I/O counters of the simulated host. */
  get stats(): Stats {
    return this.kernel.stats;
  }

  /** Live streaming DMA mappings of the host, in bytes. */
  get dmaMappedBytes(): number {
    return this.host.dma.mappedBytes;
  }

  /** The first namespace's block device, "/dev/nvme0n1". */
  get nvmeDevice(): string {
    return this.host.namespaces[0].path;
  }

  /** An anonymous mapping of `len` bytes in the simulated address space. */
  allocBuffer(len: number): UserBuffer {
    this.#live();
    if (!Number.isInteger(len) || len <= 0 || len > 1 << 30) {
      throw new RangeError(`allocBuffer: len ${len} outside [1, 1 GiB]`);
    }
    const vma = this.kernel.mm.mmap(len);
    const mm = this.kernel.mm;
    let bytes = vma.bytes.subarray(0, len);
    return this.#buffers.adopt({
      addr: vma.start,
      get bytes() {
        return bytes;
      },
      [Symbol.dispose]() {
        bytes = new Uint8Array(0);
        mm.munmap(vma.start);
      },
    });
  }

  /** open(2) in the simulated process. */
  open(path: string, flags: number, _mode = 0o644): number {
    this.#live();
    if (typeof path !== "string") return -Errno.EFAULT; // a NULL pathname
    return doSysOpen(this.kernel, path, flags);
  }

  /** close(2) in the simulated process. */
  close(fd: number): number {
    this.#live();
    return sysClose(this.kernel, fd);
  }

  /** A scratch regular file path (/tmp/NAME in the simulated namespace). */
  tempPath(name: string): string {
    if (name.includes("/")) throw new RangeError(`tempPath: '${name}' must be a plain name`);
    const p = `/tmp/${name}`;
    this.#temps.add(p);
    return p;
  }

  /** The contents of a simulated regular file. */
  readFile(path: string): Uint8Array {
    const inode = lookupInode(this.kernel, path);
    if (!inode) throw new ErrnoError(-2, `readFile ${path}`);
    return inode.contents().slice();
  }

  /** The virtual clock (CLOCK_BOOTTIME equals CLOCK_MONOTONIC; REALTIME is offset). */
  clockNs(clock: TimeoutClock): bigint {
    const mono = BigInt(Math.round(this.kernel.clock.nowNs()));
    return clock === "realtime" ? mono + BigInt(this.kernel.realtimeOffsetNs) : mono;
  }

  /** A new io_uring mirror ring; throws ErrnoError if setup fails. */
  ring(opts: RingOptions): Ring {
    this.#live();
    const params = ringParams(opts);
    const r = SimRing.setup(this.kernel, opts.entries, params);
    if (typeof r === "number") throw new ErrnoError(r, "io_uring_setup");
    return this.#rings.adopt(new Ring(r, (len) => this.allocBuffer(len)));
  }

  #live(): void {
    if (this.#closed) throw new Error("testbed used after dispose");
  }

  /** Tear down rings, files, the NVMe host and buffers. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#rings.disposeAll();
    for (const p of this.#temps) sysUnlink(this.kernel, p);
    this.host[Symbol.dispose]();
    this.#buffers.disposeAll();
    this.#closed = true;
  }
}
