/**
 * The `real` backend's testbed: the live kernel io_uring (through
 * `ffi/liburing.ts`), files opened with libc in a private temporary
 * directory, page-aligned native buffers, and, when the C controller is
 * built (`ffi/native/build/libnvme_emu.so`), an emulated NVMe namespace at
 * {@link Testbed.nvmeDevice} behind the TypeScript host stack.
 *
 * The host stack here is the one `sim` runs, on a kernel whose page frames
 * are native memory (`ffi/frames.ts`) registered with the C device's frame
 * table, whose clock is CLOCK_MONOTONIC, and whose controller is the C one.
 * Every buffer the testbed hands out is mirrored into that kernel at its real
 * address. Opening the namespace returns a descriptor the kernel reserves
 * (an `O_PATH` descriptor of the testbed's directory), so its number never
 * collides with a real file and an SQE that somehow reached the kernel on it
 * fails with -EBADF; the ring wrapper (`ffi/ring_wrapper.ts`) routes the
 * namespace's SQEs into the host stack.
 *
 * Register calls on its rings may point only into memory this testbed
 * handed out (`allocBuffer`, and the argument arrays its rings allocate):
 * the register guard (`sim/uapi/register_rules.ts`) answers anything else
 * with -EFAULT before the kernel sees it, as the sim does.
 *
 * @module
 */

import { Errno, ErrnoError } from "../sim/uapi/errno.ts";
import { Ring, type UserBuffer } from "../sim/uapi/ring_api.ts";
import {
  Handouts,
  type NvmeFaultControl,
  type PowerCutResult,
  type RingOptions,
  ringParams,
  type Testbed,
  type TestbedOptions,
  type TimeoutClock,
} from "../sim/uapi/testbed.ts";
import { O } from "../sim/uapi/io_uring.ts";
import { Kernel, MonotonicClock } from "../sim/kernel.ts";
import { attachNvme, type NvmeHost } from "../sim/host.ts";
import { SimRing } from "../sim/io_uring/io_uring.ts";
import { doSysOpen, sysClose } from "../sim/fs/namei.ts";
import type { IommuMode } from "../sim/dma/types.ts";
import type { Stats } from "../sim/stats.ts";
import { allocBuffer, clockGettimeNs, Libc, NativeMemory, processNofileLimit } from "./libc.ts";
import { LiveRing, liveRingUnavailable } from "./liburing.ts";
import { CoherentArena, NativeFrames } from "./frames.ts";
import { NvmeEmu, type NvmeEmuIommuMode, nvmeEmuUnavailable } from "./nvme_emu.ts";
import { IRQ_USER_DATA_BASE, RingWrapper } from "./ring_wrapper.ts";

/** Entries in the C device's access trace ring (16 bytes each; drained before every unmap). */
const DEVICE_TRACE_ENTRIES = 1 << 16;

/** Why the real backend cannot run here, or null when it can. */
export function realBackendUnavailable(): string | null {
  return liveRingUnavailable();
}

/** Why the real backend has no emulated NVMe namespace here, or null when it has one. */
export function realNvmeUnavailable(): string | null {
  return liveRingUnavailable() ?? nvmeEmuUnavailable();
}

/** Open a testbed on the live kernel. Throws with the reason when it cannot run here. */
export function openRealTestbed(opts: TestbedOptions = {}): Testbed {
  const why = liveRingUnavailable();
  if (why !== null) throw new Error(`real backend unavailable: ${why}`);
  return new RealTestbed(opts);
}

/** The C controller's IOMMU configuration for each DMA mode. */
function emuIommuMode(mode: IommuMode): NvmeEmuIommuMode {
  if (mode === "passthrough") return "identity";
  if (mode === "lazy" || mode === "strict") return "translate";
  return "none"; // off, and swiotlb bounce (bus address = physical address)
}

/** The host stack of the real backend: native frames, the C controller, the driver. */
class RealHost implements Disposable {
  readonly arena = new CoherentArena();
  readonly frames = new NativeFrames(this.arena);
  readonly kernel: Kernel;
  readonly host: NvmeHost;
  emu: NvmeEmu | undefined;
  /** Reserved real descriptor -> the namespace's descriptor in the host kernel. */
  readonly emulatedFds = new Map<number, number>();
  readonly threaded: boolean;
  /** The rings wrapping this host's namespace. */
  readonly wrappers = new Set<RingWrapper>();
  #irqFd = -1;

  /** Direct the device's interrupt messages to ring `fd`. */
  irqTarget(fd: number): void {
    if (fd === this.#irqFd) return;
    this.emu!.irqRing(fd, IRQ_USER_DATA_BASE);
    this.#irqFd = fd;
  }

  /** The ring receiving the interrupt messages (-1: none). */
  irqTargetFd(): number {
    return this.#irqFd;
  }

  constructor(opts: TestbedOptions, mediaDir: string) {
    this.threaded = (opts.device ?? "thread") === "thread";
    this.kernel = new Kernel({
      seed: opts.seed ?? 1,
      capSysAdmin: opts.capSysAdmin ?? true,
      timing: opts.timing ?? true,
      premap: opts.premap,
      // The host kernel's clock is the live kernel's CLOCK_MONOTONIC (and its REALTIME
      // offset), so an absolute io_uring timeout means the same instant on both.
      clock: new MonotonicClock(Number(clockGettimeNs("monotonic")) - performance.now() * 1e6),
      realtimeOffsetNs: Number(clockGettimeNs("realtime") - clockGettimeNs("monotonic")),
      frameBacking: this.frames,
      nofile: processNofileLimit(),
    });
    const iommu = opts.iommu ?? "strict";
    const namespaces = opts.namespaces ?? [{ lbaSize: 4096 as const, sizeBytes: 1n << 30n }];
    try {
      this.host = this.#attach(opts, iommu, namespaces, mediaDir);
    } catch (e) {
      // Probe failed (an admin-fail rule on Identify, say): release the arena's mapping.
      this.arena[Symbol.dispose]();
      throw e;
    }
    // The controller is enabled and holds its media files open: unlink the ones made here at
    // once, so an interrupted run (Ctrl-C kills the process mid-I/O) leaves nothing behind. A
    // media path the caller named is kept, to be reopened.
    namespaces.forEach((_, i) => {
      if (opts.mediaPaths?.[i] === undefined && !opts.mediaInMemory) {
        unlinkQuietly(`${mediaDir}/ns${i + 1}.img`);
      }
    });
    rmdirIfEmpty(mediaDir);
  }

  #attach(
    opts: TestbedOptions,
    iommu: IommuMode,
    namespaces: NonNullable<TestbedOptions["namespaces"]>,
    mediaDir: string,
  ): NvmeHost {
    return attachNvme(this.kernel, {
      iommu,
      namespaces,
      dmaMapSupported: opts.dmaMapSupported ?? true,
      dmaDebug: opts.dmaDebug,
      maxSectorsKb: opts.nvmeLimits?.maxSectorsKb,
      bugs: opts.premapBugs,
      swiotlbSlots: opts.hostLimits?.swiotlbSlots,
      ioTimeoutNs: opts.hostLimits?.ioTimeoutNs,
      hungTimeoutNs: opts.hostLimits?.hungTimeoutNs,
      controller: (dma) => {
        const emu = NvmeEmu.create({
          namespaces: namespaces.map((n, i) => ({
            lbaSize: n.lbaSize,
            sizeBytes: n.sizeBytes,
            mediaPath: opts.mediaPaths?.[i] ??
              (opts.mediaInMemory ? undefined : `${mediaDir}/ns${i + 1}.img`),
          })),
          maxQueues: 8,
          mdts: opts.nvmeLimits?.mdts,
          mode: this.threaded ? "thread" : "inline",
          seed: this.kernel.rng.nextU32(),
          volatileWriteCache: opts.volatileWriteCache,
          writeCacheBytes: opts.writeCacheBytes,
        });
        try {
          for (const rule of opts.faults ?? []) emu.addFault(rule);
        } catch (e) {
          emu[Symbol.dispose]();
          throw e;
        }
        this.emu = emu;
        this.frames.attach(emu);
        // The DMA-API debug checker hears the C device's accesses through its trace ring,
        // drained before every unmap (and at each step), as the TS controller's port
        // reports them as they happen.
        const debug = dma.debug;
        let drainTrace = () => {};
        if (debug) {
          emu.traceEnable(DEVICE_TRACE_ENTRIES);
          drainTrace = () => {
            if (!emu.tracePending()) return;
            for (const a of emu.traceTake()) debug.deviceAccess(a.addr, a.len, a.write);
          };
          debug.deviceAccessSource = drainTrace;
        }
        const pgtable = dma.iommu?.pgtable;
        emu.iommuAttach(emuIommuMode(iommu), pgtable ? pgtable.rootPa : 0n);
        if (iommu === "lazy" || iommu === "strict") {
          dma.iommu!.setRemoteIotlb({
            post: (pfn, n) => emu.invPost(pfn, n),
            wait: (seq) => emu.invWait(seq, 5e9),
          });
        }
        // The device's own DMA counters join the host's, as the TS controller's do on sim.
        const stats = this.kernel.stats;
        let seen = { reads: 0, writes: 0, faults: 0, errors: 0 };
        const fold = () => {
          const s = emu.stats();
          stats.add("deviceDmaReads", s.dmaReads - seen.reads);
          stats.add("deviceDmaWrites", s.dmaWrites - seen.writes);
          stats.add("iommuFaults", s.iommuFaults - seen.faults);
          stats.add("deviceErrors", s.errors - seen.errors);
          seen = {
            reads: s.dmaReads,
            writes: s.dmaWrites,
            faults: s.iommuFaults,
            errors: s.errors,
          };
        };
        return {
          port: emu,
          step: () => {
            drainTrace();
            const n = this.threaded ? emu.deliverInterrupts().length : emu.process(1024);
            if (n > 0) fold();
            return n;
          },
          [Symbol.dispose]: () => {
            // The device is going: nothing may post to its IOTLB or frame table after this.
            dma.iommu?.setRemoteIotlb(undefined);
            drainTrace();
            if (debug) debug.deviceAccessSource = undefined;
            this.frames.detach();
            emu[Symbol.dispose]();
          },
        };
      },
    });
  }

  [Symbol.dispose](): void {
    this.host[Symbol.dispose]();
  }
}

class RealTestbed implements Testbed {
  readonly backend = "real" as const;
  readonly seed: number;
  readonly #libc = Libc.open();
  readonly #dir = Deno.makeTempDirSync({ prefix: "premap-real-" });
  readonly #buffers = new Handouts();
  /** What #buffers holds, by address: the only memory register arguments may point into. */
  readonly #memory = new NativeMemory();
  readonly #fds = new Set<number>();
  readonly #rings = new Handouts();
  readonly #host: RealHost | undefined;
  #closed = false;

  readonly #mediaPaths: string[] | undefined;

  constructor(opts: TestbedOptions) {
    this.seed = opts.seed ?? 1;
    if (opts.media !== undefined) {
      throw new RangeError("openTestbed: media is for the sim backend (real reopens mediaPaths)");
    }
    this.#mediaPaths = opts.mediaPaths?.slice();
    const why = opts.nvme === false ? "not requested" : nvmeEmuUnavailable();
    if (why === null) {
      try {
        this.#host = new RealHost(opts, this.#dir);
      } catch (e) {
        Deno.removeSync(this.#dir, { recursive: true });
        this.#libc[Symbol.dispose]();
        throw e;
      }
    } else {
      rmdirIfEmpty(this.#dir);
    }
  }

  /** The host stack's counters (the emulated namespace's I/O), when it has one. */
  get stats(): Stats | undefined {
    return this.#host?.kernel.stats;
  }

  /** Live streaming DMA mappings of the host stack, in bytes, when it has one. */
  get dmaMappedBytes(): number | undefined {
    return this.#host?.host.dma.mappedBytes;
  }

  /** "/dev/nvme0n1" of the host stack, when the C controller is built. */
  get nvmeDevice(): string | undefined {
    return this.#host?.host.namespaces[0].path;
  }

  /** The C controller (for its counters), when there is one. */
  get device(): NvmeEmu | undefined {
    return this.#host?.emu;
  }

  /** Fault injection on the C controller, when there is one. */
  get nvmeFaults(): NvmeFaultControl | undefined {
    const emu = this.#host?.emu;
    if (emu === undefined) return undefined;
    return {
      add: (rule) => emu.addFault(rule),
      clear: () => emu.clearFaults(),
      get injected() {
        return emu.faultsInjected;
      },
    };
  }

  /** Cut the C controller's power; the media files (`mediaPaths`) keep what survived. */
  powerCut(seed: number): PowerCutResult {
    this.#live();
    const emu = this.#host?.emu;
    if (emu === undefined) {
      throw new Error("powerCut: this testbed has no emulated NVMe controller");
    }
    const r = emu.powerCut(seed);
    return this.#mediaPaths ? { ...r, mediaPaths: this.#mediaPaths.slice() } : r;
  }

  /** The host stack's kernel, when there is one (inspection). */
  get hostKernel(): Kernel | undefined {
    return this.#host?.kernel;
  }

  allocBuffer(len: number): UserBuffer {
    this.#live();
    const nb = this.#memory.adopt(allocBuffer(len));
    const host = this.#host;
    if (host === undefined) return this.#buffers.adopt(nb);
    const size = Math.ceil(len / 4096) * 4096;
    const whole = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(nb.ptr, size));
    const vma = host.kernel.mm.mmapFixed(nb.addr, whole);
    if (typeof vma === "number") {
      nb[Symbol.dispose]();
      throw new ErrnoError(vma, "allocBuffer: mirror into the host stack");
    }
    return this.#buffers.adopt({
      addr: nb.addr,
      get bytes() {
        return nb.bytes;
      },
      [Symbol.dispose]() {
        host.kernel.mm.munmap(nb.addr);
        whole.fill(0);
        nb[Symbol.dispose]();
      },
    });
  }

  open(path: string, flags: number, mode = 0o644): number {
    this.#live();
    if (typeof path !== "string") return -Errno.EFAULT; // a NULL pathname
    const host = this.#host;
    if (host && host.kernel.devices.has(path)) {
      const simFd = doSysOpen(host.kernel, path, flags);
      if (simFd < 0) return simFd;
      // The placeholder descriptor keeps its number even once the (empty) directory is gone.
      Deno.mkdirSync(this.#dir, { recursive: true });
      const fd = this.#libc.open(this.#dir, O.PATH | O.DIRECTORY | O.CLOEXEC, 0);
      rmdirIfEmpty(this.#dir);
      if (fd < 0) {
        sysClose(host.kernel, simFd);
        return fd;
      }
      host.emulatedFds.set(fd, simFd);
      this.#fds.add(fd);
      return fd;
    }
    const fd = this.#libc.open(path, flags, mode);
    if (fd >= 0) this.#fds.add(fd);
    return fd;
  }

  close(fd: number): number {
    this.#live();
    const simFd = this.#host?.emulatedFds.get(fd);
    const r = this.#libc.close(fd);
    if (r === 0) {
      this.#fds.delete(fd);
      if (simFd !== undefined) {
        this.#host!.emulatedFds.delete(fd);
        sysClose(this.#host!.kernel, simFd);
      }
    }
    return r;
  }

  tempPath(name: string): string {
    if (name.includes("/")) throw new RangeError(`tempPath: '${name}' must be a plain name`);
    // The directory is removed whenever it is empty (see unlinkScratch): make it again.
    Deno.mkdirSync(this.#dir, { recursive: true });
    return `${this.#dir}/${name}`;
  }

  readFile(path: string): Uint8Array {
    return Deno.readFileSync(path);
  }

  /** clock_gettime(2) on the live kernel's clock. */
  clockNs(clock: TimeoutClock): bigint {
    return clockGettimeNs(clock);
  }

  ring(opts: RingOptions): Ring {
    this.#live();
    const r = LiveRing.create(opts.entries, {
      flags: opts.flags,
      cqEntries: opts.cqEntries,
      memory: this.#memory,
    });
    if (!("ring" in r)) throw new ErrnoError(r.res, "io_uring_setup");
    const host = this.#host;
    if (host === undefined) {
      return this.#rings.adopt(new Ring(r.ring, (len) => this.allocBuffer(len)));
    }
    const live = r.ring;
    // The shadow only queues the namespace's SQEs; its completions are forwarded into the
    // live ring, so its CQ need not be as small as the application asked for the live one.
    const shadowEntries = Math.max(opts.entries, 8) * 4;
    const params = ringParams({
      ...opts,
      cqEntries: opts.cqEntries === undefined
        ? undefined
        : Math.max(opts.cqEntries, 2 * shadowEntries),
    });
    const shadow = SimRing.setup(host.kernel, shadowEntries, params);
    if (typeof shadow === "number") {
      live[Symbol.dispose]();
      throw new ErrnoError(shadow, "io_uring_setup (host stack)");
    }
    const wrapper = new RingWrapper(live, shadow, {
      mm: host.kernel.mm,
      emulatedFds: host.emulatedFds,
      poll: () => host.kernel.poll(),
      nextTimerInNs: () => host.kernel.nextTimerNs - host.kernel.clock.nowNs(),
      outstanding: () => host.host.driver.outstandingCommands,
      threaded: host.threaded,
      alloc: (len) => this.allocBuffer(len),
      irqTarget: (fd) => host.irqTarget(fd),
      irqTargetFd: () => host.irqTargetFd(),
      wrappers: host.wrappers,
      countWaitEnter: () => {
        const st = host.kernel.stats;
        st.completion(() => st.add("enterCalls"));
      },
    });
    return this.#rings.adopt(new Ring(wrapper, (len) => this.allocBuffer(len)));
  }

  #live(): void {
    if (this.#closed) throw new Error("testbed used after dispose");
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#rings.disposeAll();
    for (const fd of this.#fds) {
      const simFd = this.#host?.emulatedFds.get(fd);
      if (simFd !== undefined) sysClose(this.#host!.kernel, simFd);
      this.#libc.close(fd);
    }
    this.#fds.clear();
    this.#host?.[Symbol.dispose]();
    this.#buffers.disposeAll();
    this.#host?.arena[Symbol.dispose]();
    this.#closed = true;
    this.#libc[Symbol.dispose]();
    try {
      Deno.removeSync(this.#dir, { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}

/** Remove a file if it is there. */
function unlinkQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Remove a directory when it is empty (nothing is lost: tempPath makes it again). */
export function rmdirIfEmpty(dir: string): void {
  try {
    Deno.removeSync(dir);
  } catch {
    // not empty, or already gone
  }
}
