/**
 * Host wiring: one NVMe controller on the PCIe bus, its DMA setup (IOMMU
 * mode), the nvme-pci driver bound to it, and a block device node
 * `/dev/nvme0nN` per namespace in `kernel.devices`.
 *
 * The controller is the TypeScript model by default (`sim`), stepped by a
 * kernel poller: `kernel.poll()` lets it fetch commands and raise
 * interrupts, whose handlers complete requests. The real backend plugs in
 * the C controller through {@link AttachNvmeOptions.controller}; its poller
 * delivers the interrupts the device thread raised (or, inline, steps it).
 *
 * @module
 */

import type { Kernel, Poller } from "./kernel.ts";
import type { NvmeControllerPort } from "./device/port.ts";
import { Errno, ErrnoError } from "./uapi/errno.ts";
import { createDma, type Dma } from "./dma/mapping.ts";
import type { DmaApi, IommuMode } from "./dma/types.ts";
import { type NamespaceConfig, NvmeController } from "./device/controller.ts";
import type { NvmeFaultRule } from "./device/faults.ts";
import type { SparseMedia } from "./device/media.ts";
import { blkdevOpen, BlockDevice } from "./block/bdev.ts";
import { queueMaxSectorsStore } from "./block/blk-sysfs.ts";
import { NvmeDev, type NvmeNamespace, type NvmePostedBugs } from "./nvme/pci.ts";

/** A controller the host can attach: its MMIO seam, how the simulation steps it, teardown. */
export interface AttachedController extends Disposable {
  /** What the driver sees. */
  port: NvmeControllerPort;
  /** Make progress (step a model, or deliver a device thread's interrupts): events handled. */
  step(): number;
}

/** Builds a controller on a DMA setup; `outstanding` is the driver's own count of commands. */
export type ControllerFactory = (dma: Dma, outstanding: () => number) => AttachedController;

/** Options for {@link attachNvme}. */
export interface AttachNvmeOptions {
  /** Build the controller (default: the TypeScript model of `sim/device/`). */
  controller?: ControllerFactory;
  /** DMA configuration between the controller and memory. */
  iommu: IommuMode;
  /** Namespaces (default one 1 GiB namespace of 4096-byte blocks). */
  namespaces?: NamespaceConfig[];
  /** Tags per hardware queue (default 1023). */
  queueDepth?: number;
  /** I/O queue pairs (default 1). */
  nrIoQueues?: number;
  /** sgl_threshold (default 32 KiB, 0 disables SGLs). */
  sglThreshold?: number;
  /** Whether the driver has the proposal's dma_map (default true). */
  dmaMapSupported?: boolean;
  /** Reproduce the published bugs (v1 PAGE_SIZE for PAGE_SHIFT, v2 remaining counter). */
  bugs?: NvmePostedBugs;
  /** Controller MDTS (default 5: 128 KiB). */
  mdts?: number;
  /**
   * max_sectors_kb written to every namespace's queue after probe, as through
   * sysfs (`queueMaxSectorsStore`); outside [4, max_hw_sectors_kb] attachNvme
   * throws an ErrnoError(-EINVAL). Default: the driver's, min(max_hw_sectors_kb, 1280).
   */
  maxSectorsKb?: number;
  /** Controller SGL support (default true). */
  sgls?: boolean;
  /** Controller has a volatile write cache (Identify VWC), so fsync sends Flush (default false). */
  volatileWriteCache?: boolean;
  /** The TS controller's write cache capacity in bytes (default 4 MiB). */
  writeCacheBytes?: number;
  /** Fault rules the TS controller holds before probe (a factory's controller adds its own). */
  faults?: readonly NvmeFaultRule[];
  /** The TS controller's namespaces' media to start from (default: new, zero-filled). */
  media?: readonly SparseMedia[];
  /** Controller CAP.MQES + 1 (default 1024). */
  mqes?: number;
  /** nvme_max_retries (default 5). */
  maxRetries?: number;
  /** Controller number in device names (default 0: /dev/nvme0n1). */
  instance?: number;
  /** CONFIG_DMA_API_DEBUG for the controller's DMA setup (default true). */
  dmaDebug?: boolean;
  /** bounce mode: swiotlb slots of 2 KiB (default 32768, the kernel's 64 MiB). */
  swiotlbSlots?: number;
  /** The device's DMA mask in bits (default 64; 32 in bounce mode): bounds the IOVA space. */
  dmaMaskBits?: number;
  /** Pages the driver's "prp list page" pool may grow to (default 64 MiB worth). */
  prpPoolMaxPages?: number;
  /** The driver's io_timeout in ns (default 30 s). */
  ioTimeoutNs?: number;
  /** How long a request may wait for a resource before it is reported hung (default 120 s). */
  hungTimeoutNs?: number;
}

/** One namespace as attached: its device node path and sizes. */
export interface NvmeHostNamespace {
  /** Device node, e.g. "/dev/nvme0n1". */
  path: string;
  /** Namespace id. */
  nsid: number;
  /** Logical block size. */
  lbaSize: number;
  /** Capacity. */
  sizeBytes: bigint;
  /** The block device. */
  bdev: BlockDevice;
  /** Driver view. */
  ns: NvmeNamespace;
}

/** An attached controller with its driver. */
export interface NvmeHost extends Disposable {
  /** The driver. */
  driver: NvmeDev;
  /** The TypeScript controller model (sim), or undefined when another controller is attached. */
  controller: NvmeController | undefined;
  /** The controller's MMIO seam (either kind). */
  port: NvmeControllerPort;
  /** The driver's DMA API. */
  dma: DmaApi;
  /** The DMA setup (IOMMU, device port). */
  dmaSetup: Dma;
  /** Namespaces in NSID order. */
  namespaces: NvmeHostNamespace[];
}

/** Build DMA, controller and driver, probe, and register the namespaces' device nodes. */
export function attachNvme(kernel: Kernel, opts: AttachNvmeOptions): NvmeHost {
  const dmaSetup = createDma(kernel, {
    mode: opts.iommu,
    debug: opts.dmaDebug,
    device: `nvme${opts.instance ?? 0}`,
    swiotlbSlots: opts.swiotlbSlots,
    dmaMaskBits: opts.dmaMaskBits,
  });
  const ref: { driver?: NvmeDev } = {};
  const outstanding = () => ref.driver?.outstandingCommands ?? 0;
  let model: NvmeController | undefined;
  const attached: AttachedController = opts.controller
    ? opts.controller(dmaSetup, outstanding)
    : simController(kernel, dmaSetup, opts, (c) => (model = c));
  const stats = kernel.stats;
  const poller: Poller = {
    poll(): number {
      if (!stats.timing) return attached.step();
      const t0 = performance.now();
      const c0 = stats.stageNs.completion;
      const n = attached.step();
      const total = (performance.now() - t0) * 1e6;
      stats.stageNs.device += Math.max(0, total - (stats.stageNs.completion - c0));
      return n;
    },
    get inFlight() {
      return model ? model.inFlight : outstanding();
    },
  };
  kernel.addPoller(poller);
  const driver = new NvmeDev(kernel, attached.port, dmaSetup.api, {
    queueDepth: opts.queueDepth,
    nrIoQueues: opts.nrIoQueues,
    sglThreshold: opts.sglThreshold,
    dmaMapSupported: opts.dmaMapSupported,
    maxRetries: opts.maxRetries,
    prpPoolMaxPages: opts.prpPoolMaxPages,
    bugs: opts.bugs,
  });
  ref.driver = driver;
  const r = driver.probe();
  if (r >= 0 && driver.tagSet) {
    if (opts.ioTimeoutNs !== undefined) driver.tagSet.timeoutNs = opts.ioTimeoutNs;
    if (opts.hungTimeoutNs !== undefined) driver.tagSet.hungTimeoutNs = opts.hungTimeoutNs;
  }
  if (r < 0) {
    kernel.removePoller(poller);
    driver[Symbol.dispose]();
    attached[Symbol.dispose]();
    dmaSetup[Symbol.dispose]();
    throw new Error(`nvme probe failed: ${r} (${Errno.ENODEV === -r ? "ENODEV" : "errno"})`);
  }
  const inst = opts.instance ?? 0;
  const namespaces: NvmeHostNamespace[] = driver.namespaces.map((ns) => {
    const name = `nvme${inst}n${ns.info.nsid}`;
    const path = `/dev/${name}`;
    const bdev = new BlockDevice(name, ns.queue, ns.sizeBytes);
    if (kernel.devices.has(path)) throw new Error(`attachNvme: ${path} already registered`);
    kernel.devices.set(path, (p, flags) => blkdevOpen(kernel, bdev, p, flags));
    return { path, nsid: ns.info.nsid, lbaSize: ns.lbaSize, sizeBytes: ns.sizeBytes, bdev, ns };
  });
  if (opts.maxSectorsKb !== undefined) {
    for (const n of namespaces) {
      const e = queueMaxSectorsStore(n.bdev.queue, opts.maxSectorsKb);
      if (e < 0) {
        for (const m of namespaces) kernel.devices.delete(m.path);
        kernel.removePoller(poller);
        driver[Symbol.dispose]();
        attached[Symbol.dispose]();
        dmaSetup[Symbol.dispose]();
        throw new ErrnoError(e, `max_sectors_kb ${opts.maxSectorsKb}`);
      }
    }
  }
  let disposed = false;
  return {
    driver,
    controller: model,
    port: attached.port,
    dma: dmaSetup.api,
    dmaSetup,
    namespaces,
    [Symbol.dispose]() {
      if (disposed) return;
      disposed = true;
      for (const n of namespaces) kernel.devices.delete(n.path);
      kernel.removePoller(poller);
      driver[Symbol.dispose]();
      attached[Symbol.dispose]();
      dmaSetup[Symbol.dispose]();
    },
  };
}

/** The TypeScript controller of `sim/device/`, stepped by `poll()` behind the seam. */
function simController(
  kernel: Kernel,
  dmaSetup: Dma,
  opts: AttachNvmeOptions,
  expose: (c: NvmeController) => void,
): AttachedController {
  const controller = new NvmeController(dmaSetup.port, {
    namespaces: opts.namespaces,
    mdts: opts.mdts,
    sgls: opts.sgls,
    volatileWriteCache: opts.volatileWriteCache,
    writeCacheBytes: opts.writeCacheBytes,
    media: opts.media,
    mqes: opts.mqes,
    maxQueues: Math.max(8, opts.nrIoQueues ?? 1),
    seed: kernel.rng.nextU32(),
  }, kernel.stats);
  for (const rule of opts.faults ?? []) controller.addFault(rule);
  expose(controller);
  return { port: controller, step: () => controller.poll(), [Symbol.dispose]() {} };
}
