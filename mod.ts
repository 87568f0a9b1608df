/**
 * premap testbed: DMA pre-mapping of io_uring registered buffers, modelled
 * end to end (io_uring -> iov_iter -> bio -> blk-mq -> DMA/IOMMU -> nvme-pci
 * -> an NVMe controller that checks PRPs like hardware), on a deterministic
 * TypeScript host (`sim`) or on the live kernel's io_uring (`real`).
 *
 * @example
 * ```ts
 * import { IOSQE, O, openTestbed } from "./mod.ts";
 *
 * using tb = openTestbed({ backend: "sim", seed: 1 });
 * const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
 * using ring = tb.ring({ entries: 8 });
 * using buf = tb.allocBuffer(4096);
 * ring.registerFiles([fd]);
 * ring.registerBuffers([{ addr: buf.addr, len: 4096 }]);
 * ring.mapBuffers(0, 0, 1); // IORING_REGISTER_MAP_BUFFERS: premap buffer 0 on fixed file 0
 * ring.readFixed(0, buf.addr, 4096, 0n, 0, { flags: IOSQE.FIXED_FILE });
 * const [cqe] = ring.submitAndReap(1);
 * console.log(cqe.res); // 4096
 * ```
 *
 * @module
 */

import { openRealTestbed } from "./ffi/testbed.ts";
import { openSimTestbed } from "./sim/testbed.ts";
import type { Testbed, TestbedOptions } from "./sim/uapi/testbed.ts";

/**
 * Open a testbed. `backend: "sim"` (default) needs no permissions and is
 * deterministic for a seed; `backend: "real"` needs `--allow-ffi` and
 * liburing 2.3, and throws with the reason when it cannot run.
 */
export function openTestbed(opts: TestbedOptions = {}): Testbed {
  const backend = opts.backend ?? "sim";
  if (backend === "sim") return openSimTestbed(opts);
  if (backend === "real") return openRealTestbed(opts);
  throw new RangeError(`openTestbed: backend must be "sim" or "real", got ${String(backend)}`);
}

export { realBackendUnavailable, realNvmeUnavailable } from "./ffi/testbed.ts";
export { PREMAP_VARIANTS } from "./sim/kernel.ts";
export type {
  Backend,
  NamespaceOptions,
  NvmeFaultControl,
  PowerCutResult,
  PremapVariant,
  RingOptions,
  Testbed,
  TestbedOptions,
  TimeoutClock,
} from "./sim/uapi/testbed.ts";
export { NVME_FAULT_KINDS, type NvmeFaultKind, type NvmeFaultRule } from "./sim/device/faults.ts";
export type { PowerCutReport } from "./sim/device/write_cache.ts";
export type { SparseMedia } from "./sim/device/media.ts";
export {
  type Allocator,
  type CallResult,
  type Completion,
  encodeIovecs,
  type PrepOptions,
  type RawRing,
  result,
  Ring,
  type UserBuffer,
} from "./sim/uapi/ring_api.ts";
export {
  CQE,
  type Cqe,
  decodeSqe,
  encodeMapBuffers,
  encodeRsrcRegister,
  encodeRsrcUpdate2,
  encodeSqe,
  IORING_CQE_F,
  IORING_ENTER,
  IORING_FEAT,
  IORING_FSYNC_DATASYNC,
  IORING_MSG,
  IORING_MSG_RING,
  IORING_OP,
  IORING_REGISTER,
  IORING_REGISTER_BPF_FILTER,
  IORING_REGISTER_LAST,
  IORING_REGISTER_MAP_BUFFERS,
  IORING_REGISTER_UNMAP_BUFFERS,
  IORING_RSRC_REGISTER_SPARSE,
  IORING_SETUP,
  IORING_SQ,
  IORING_TIMEOUT,
  IOSQE,
  MAP_BUFFERS,
  O,
  SQE,
  type SqeFields,
} from "./sim/uapi/io_uring.ts";
export { describeResult, Errno, ErrnoError, type ErrnoName, errnoName } from "./sim/uapi/errno.ts";
export {
  COUNTER,
  COUNTER_NAMES,
  type CounterName,
  type Side,
  STAGE_NAMES,
  type StageName,
  Stats,
  type StatsSnapshot,
} from "./sim/stats.ts";
export { IOMMU_MODES, type IommuMode } from "./sim/dma/types.ts";
export {
  IO_PATHS,
  type IoPath,
  type LatencyNs,
  runWorkload,
  type RwMode,
  type WorkloadConfig,
  WorkloadError,
  type WorkloadRecord,
} from "./bench/workload.ts";
export {
  COST_TABLE,
  type CostTable,
  type CountsBySide,
  type EventCost,
  type FittedCost,
  type MeasuredCost,
  type ModelCost,
  modelCost,
} from "./bench/cost_model.ts";
export { type RepeatSpread, type Spread } from "./bench/repeat.ts";
