/**
 * The C NVMe controller's own rate: how many reads per second the real
 * backend's emulated device (`libnvme_emu.so`) completes when nothing but a
 * minimal host driver stands in front of it, so a user can see that the
 * device is not what limits the real backend's figures.
 *
 * One controller in thread mode (the device thread polls the doorbells),
 * IOMMU none (bus address = physical address), one 1 GiB namespace of 4 KiB
 * LBAs on process memory or on a file in a temporary directory. The host side
 * is written here directly against BAR0: enable the controller, Identify,
 * create one I/O queue pair with interrupts on, then keep `qd` random reads
 * outstanding for `seconds`; each completion is reaped in the MSI-X handler,
 * which releases the CQ entry (head doorbell) and submits the next read.
 *
 * Two rates are reported: reads per second of wall time (host and device
 * together, the TypeScript host included) and reads per second of the
 * device's busy time (`stats().busyNs`: time the device thread spent
 * fetching, executing and completing commands), the device's own capacity.
 *
 * The media file is created sparse and never written, so file-media reads are
 * O_DIRECT reads of holes: they measure the device's io_uring path and the
 * filesystem's extent lookup, not the disk under it.
 *
 * Run: `deno run -A bench/device_rate.ts --media=memory,file --qd=32 --seconds=2`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseSize } from "./cli.ts";
import { CoherentArena, pointerOf } from "../ffi/frames.ts";
import { NVME_REG, NvmeEmu, type NvmeEmuStats, nvmeEmuUnavailable } from "../ffi/nvme_emu.ts";
import {
  decodeCqe,
  encodeNvmeCommand,
  NVME_ADMIN,
  NVME_CMD,
  NVME_CQ_IRQ_ENABLED,
  NVME_CQE_SIZE,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_SQE_SIZE,
  type NvmeCommandInit,
  nvmeStatusString,
} from "../sim/device/nvme_spec.ts";
import { doorbellOffset, encodeAqa, encodeCc } from "../sim/device/regs.ts";

const PAGE = 4096;
/** Namespace capacity: 1 GiB. */
export const DEVICE_RATE_NS_BYTES = 1 << 30;
/** Logical block size of the namespace. */
export const DEVICE_RATE_LBA = 4096;
/** Largest block size measured: 32 pages (the controller's default MDTS 5). */
export const DEVICE_RATE_MAX_BS = 32 * PAGE;
const ADMIN_ENTRIES = 16;
const NSID = 1;
const IO_QID = 1;
const IO_VECTOR = 1;

/** Options of {@link measureDeviceRate}. */
export interface DeviceRateOptions {
  /** Namespace media: sparse process memory, or a file in a temporary directory. */
  media: "memory" | "file";
  /** Where the file media's temporary directory is made (default /var/tmp). */
  mediaDir?: string;
  /** Reads kept outstanding (1..1023). */
  qd: number;
  /** How long to keep submitting, in seconds. */
  seconds: number;
  /** Bytes per read, a multiple of 4096 up to {@link DEVICE_RATE_MAX_BS} (default 4096). */
  bs?: number;
}

/** What one {@link measureDeviceRate} run measured (device counters are deltas over the I/O phase). */
export interface DeviceRate {
  /** Media kind measured. */
  media: "memory" | "file";
  /** Queue depth. */
  qd: number;
  /** Bytes per read. */
  bs: number;
  /** Reads the host saw complete (all with status 0). */
  reads: number;
  /** Completions with a nonzero status (always 0: the run throws on the first). */
  errors: number;
  /** Wall time from the first submission to the last completion, in seconds. */
  elapsedSec: number;
  /** reads / elapsedSec. */
  readsPerSecWall: number;
  /** The device thread's busy time over the I/O phase (stats().busyNs), in nanoseconds. */
  busyNs: number;
  /** reads / (busyNs / 1e9): the device's own capacity. */
  readsPerSecBusy: number;
  /** busyNs / wall time. */
  busyFraction: number;
  /** Successful Read commands the device counted (stats().reads). */
  deviceReads: number;
  /** Bytes the device moved from media to host (stats().bytesRead). */
  deviceBytesRead: number;
  /** Completions with a nonzero status the device counted (stats().errors). */
  deviceErrors: number;
  /** Media I/Os straight between the media file and host pages. */
  mediaDirect: number;
  /** Media I/Os through the device's bounce buffer. */
  mediaBounced: number;
  /** Futex sleeps of the device thread. */
  sleeps: number;
  /** Futex wakes the host issued. */
  wakeups: number;
  /** Interrupt vectors the device raised. */
  irqs: number;
  /** Interrupt deliveries the host ran (handler calls). */
  interrupts: number;
}

/** A failure of the host driver (controller not ready, a command failing). */
export class DeviceRateError extends Error {
  /** A message naming what failed. */
  constructor(message: string) {
    super(message);
    this.name = "DeviceRateError";
  }
}

function pa(pfn: number, off = 0): bigint {
  return BigInt(pfn) * BigInt(PAGE) + BigInt(off);
}

/** xorshift32: a random LBA per read without BigInt work in the hot path. */
function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** A queue in native frames: its pfn and a view of its pages. */
interface Frames {
  pfn: number;
  bytes: Uint8Array;
}

/**
 * Measure the C controller's read rate: `qd` random reads of `bs` bytes kept
 * outstanding for `seconds` on a thread-mode controller. Throws
 * {@link DeviceRateError} when a command fails (with its NVMe status) and an
 * Error when the library is not available (see `nvmeEmuUnavailable()`).
 */
export function measureDeviceRate(opts: DeviceRateOptions): DeviceRate {
  const bs = opts.bs ?? 4096;
  const { qd, seconds, media } = opts;
  if (!Number.isInteger(qd) || qd < 1 || qd > 1023) {
    throw new RangeError(`measureDeviceRate: qd ${qd} (1..1023)`);
  }
  if (!(seconds > 0) || !Number.isFinite(seconds)) {
    throw new RangeError(`measureDeviceRate: seconds ${seconds}`);
  }
  if (!Number.isInteger(bs) || bs <= 0 || bs % PAGE !== 0 || bs > DEVICE_RATE_MAX_BS) {
    throw new RangeError(`measureDeviceRate: bs ${bs} (a multiple of 4096 up to 128 KiB)`);
  }
  if (media !== "memory" && media !== "file") {
    throw new RangeError(`measureDeviceRate: media ${String(media)} (memory or file)`);
  }
  const why = nvmeEmuUnavailable();
  if (why !== null) throw new Error(`libnvme_emu unavailable: ${why}`);

  let dir: string | undefined;
  if (media === "file") {
    dir = Deno.makeTempDirSync({ dir: opts.mediaDir ?? "/var/tmp", prefix: "premap-devrate-" });
  }
  try {
    return run(media, qd, seconds, bs, dir === undefined ? undefined : `${dir}/ns1.img`);
  } finally {
    if (dir !== undefined) Deno.removeSync(dir, { recursive: true });
  }
}

function run(
  media: "memory" | "file",
  qd: number,
  seconds: number,
  bs: number,
  mediaPath: string | undefined,
): DeviceRate {
  const qsize = qd + 1; // a queue of n entries holds n - 1
  const sqPages = Math.ceil((qsize * NVME_SQE_SIZE) / PAGE);
  const cqPages = Math.ceil((qsize * NVME_CQE_SIZE) / PAGE);
  const dataPages = bs / PAGE;
  const listPages = dataPages > 2 ? 1 : 0;
  const totalPages = 3 + sqPages + cqPages + qd * (dataPages + listPages);
  using arena = new CoherentArena(totalPages * PAGE);
  using emu = NvmeEmu.create({
    namespaces: [{ lbaSize: DEVICE_RATE_LBA, sizeBytes: DEVICE_RATE_NS_BYTES, mediaPath }],
    maxQueues: 1,
    mqes: 1024,
    mode: "thread",
    seed: 1,
  });
  emu.iommuAttach("none");

  // Frames at arbitrary, scattered pfns: a run of `n` pages each, a gap between runs.
  let nextPfn = 0x2_3a41;
  const frames = (n: number): Frames => {
    const bytes = arena.alloc(n);
    const pfn = nextPfn;
    emu.frameMap(pfn, n, pointerOf(bytes));
    nextPfn += n + 1 + ((pfn * 2654435761) >>> 0) % 97;
    return { pfn, bytes };
  };
  const asq = frames(1);
  const acq = frames(1);
  const ident = frames(1);
  const iosq = frames(sqPages);
  const iocq = frames(cqPages);
  const slots = Array.from({ length: qd }, () => {
    const data = frames(dataPages);
    const list = listPages ? frames(1) : undefined;
    let prp2 = 0n;
    if (dataPages === 2) prp2 = pa(data.pfn + 1);
    if (list) {
      const v = new DataView(list.bytes.buffer, list.bytes.byteOffset, PAGE);
      for (let i = 1; i < dataPages; i++) v.setBigUint64((i - 1) * 8, pa(data.pfn + i), true);
      prp2 = pa(list.pfn);
    }
    return { prp1: pa(data.pfn), prp2 };
  });

  // ------------------------------------------------------------ admin queue
  let acqHead = 0;
  let acqPhase = 1;
  let asqTail = 0;
  let cid = 0;
  const adminDone: { cid: number; status: number; result: number }[] = [];
  emu.setIrqHandler(0, () => {
    for (;;) {
      const c = decodeCqe(acq.bytes, acqHead * NVME_CQE_SIZE);
      if (c.phase !== acqPhase) break;
      adminDone.push({ cid: c.commandId, status: c.status, result: c.result });
      if (++acqHead === ADMIN_ENTRIES) {
        acqHead = 0;
        acqPhase ^= 1;
      }
    }
    emu.writeReg32(doorbellOffset(0, true), acqHead);
  });
  const admin = (what: string, init: Omit<NvmeCommandInit, "commandId">): number => {
    const id = ++cid;
    encodeNvmeCommand(
      { ...init, commandId: id },
      asq.bytes.subarray(asqTail * NVME_SQE_SIZE, (asqTail + 1) * NVME_SQE_SIZE),
    );
    asqTail = (asqTail + 1) % ADMIN_ENTRIES;
    emu.writeReg32(doorbellOffset(0, false), asqTail);
    const t0 = performance.now();
    for (;;) {
      const i = adminDone.findIndex((d) => d.cid === id);
      if (i >= 0) {
        const d = adminDone.splice(i, 1)[0];
        if (d.status !== 0) {
          throw new DeviceRateError(`${what}: NVMe status ${nvmeStatusString(d.status)}`);
        }
        return d.result;
      }
      if (performance.now() - t0 > 5000) throw new DeviceRateError(`${what}: no completion in 5 s`);
      if (emu.waitInterrupt(100_000_000n) > 0) emu.deliverInterrupts();
    }
  };

  emu.writeReg32(NVME_REG.AQA, encodeAqa(ADMIN_ENTRIES, ADMIN_ENTRIES));
  emu.writeReg64(NVME_REG.ASQ, pa(asq.pfn));
  emu.writeReg64(NVME_REG.ACQ, pa(acq.pfn));
  emu.writeReg32(NVME_REG.CC, encodeCc({ en: true, css: 0, mps: 0, shn: 0, iosqes: 6, iocqes: 4 }));
  const tReady = performance.now();
  while ((emu.readReg32(NVME_REG.CSTS) & 3) !== 1) {
    if ((emu.readReg32(NVME_REG.CSTS) & 2) !== 0) throw new DeviceRateError("CSTS.CFS on enable");
    if (performance.now() - tReady > 5000) throw new DeviceRateError("CSTS.RDY not set in 5 s");
    emu.waitInterrupt(1_000_000n);
  }
  admin("Identify Controller", { opcode: NVME_ADMIN.IDENTIFY, prp1: pa(ident.pfn), cdw10: 1 });
  admin("Identify Namespace", {
    opcode: NVME_ADMIN.IDENTIFY,
    nsid: NSID,
    prp1: pa(ident.pfn),
    cdw10: 0,
  });
  const nsze = new DataView(ident.bytes.buffer, ident.bytes.byteOffset, PAGE).getBigUint64(0, true);
  const nlbas = DEVICE_RATE_NS_BYTES / DEVICE_RATE_LBA;
  if (nsze !== BigInt(nlbas)) {
    throw new DeviceRateError(`Identify Namespace: NSZE ${nsze}, expected ${nlbas}`);
  }
  admin("Set Features (Number of Queues)", {
    opcode: NVME_ADMIN.SET_FEATURES,
    cdw10: 0x07,
    cdw11: 0, // one SQ, one CQ (0-based)
  });
  admin("Create I/O CQ", {
    opcode: NVME_ADMIN.CREATE_CQ,
    prp1: pa(iocq.pfn),
    cdw10: (((qsize - 1) << 16) | IO_QID) >>> 0,
    cdw11: ((IO_VECTOR << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED) >>> 0,
  });
  admin("Create I/O SQ", {
    opcode: NVME_ADMIN.CREATE_SQ,
    prp1: pa(iosq.pfn),
    cdw10: (((qsize - 1) << 16) | IO_QID) >>> 0,
    cdw11: ((IO_QID << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0,
  });

  // ------------------------------------------------------------- I/O queue
  const sqe = Array.from(
    { length: qsize },
    (_, i) => iosq.bytes.subarray(i * NVME_SQE_SIZE, (i + 1) * NVME_SQE_SIZE),
  );
  const sqDb = doorbellOffset(IO_QID, false);
  const cqDb = doorbellOffset(IO_QID, true);
  const rand = xorshift32(0x9e37_79b9);
  const blocks = nlbas / dataPages; // read-sized blocks, each aligned to bs
  const nlb0 = bs / DEVICE_RATE_LBA - 1;
  let sqTail = 0;
  let cqHead = 0;
  let cqPhase = 1;
  let inflight = 0;
  let completed = 0;
  let interrupts = 0;
  let submitting = true;
  let deadline = 0;
  const submit = (slot: number): void => {
    const s = slots[slot];
    encodeNvmeCommand({
      opcode: NVME_CMD.READ,
      commandId: slot,
      nsid: NSID,
      prp1: s.prp1,
      prp2: s.prp2,
      slba: BigInt((rand() % blocks) * (nlb0 + 1)),
      nlb0,
    }, sqe[sqTail]);
    sqTail = sqTail + 1 === qsize ? 0 : sqTail + 1;
    inflight++;
  };
  emu.setIrqHandler(IO_VECTOR, () => {
    interrupts++;
    if (submitting && performance.now() >= deadline) submitting = false;
    let reaped = 0;
    let resubmitted = 0;
    for (;;) {
      const c = decodeCqe(iocq.bytes, cqHead * NVME_CQE_SIZE);
      if (c.phase !== cqPhase) break;
      if (c.status !== 0) {
        throw new DeviceRateError(
          `Read (cid ${c.commandId}): NVMe status ${nvmeStatusString(c.status)} ` +
            `after ${completed} reads`,
        );
      }
      if (++cqHead === qsize) {
        cqHead = 0;
        cqPhase ^= 1;
      }
      reaped++;
      completed++;
      inflight--;
      if (submitting) {
        submit(c.commandId);
        resubmitted++;
      }
    }
    if (reaped) emu.writeReg32(cqDb, cqHead);
    if (resubmitted) emu.writeReg32(sqDb, sqTail);
  });

  const before = emu.stats();
  const t0 = performance.now();
  deadline = t0 + seconds * 1000;
  for (let i = 0; i < qd; i++) submit(i);
  emu.writeReg32(sqDb, sqTail);
  let lastProgress = t0;
  let lastCompleted = 0;
  while (inflight > 0) {
    if (emu.waitInterrupt(100_000_000n) > 0) emu.deliverInterrupts();
    const now = performance.now();
    if (completed !== lastCompleted) {
      lastCompleted = completed;
      lastProgress = now;
    } else if (now - lastProgress > 5000) {
      throw new DeviceRateError(`no completion in 5 s with ${inflight} reads outstanding`);
    }
  }
  const t1 = performance.now();
  const after = emu.stats();
  const d = (k: keyof NvmeEmuStats): number => after[k] - before[k];

  emu.writeReg32(NVME_REG.CC, 0); // reset before the frames go away with the arena
  const elapsedSec = (t1 - t0) / 1000;
  const busyNs = d("busyNs");
  return {
    media,
    qd,
    bs,
    reads: completed,
    errors: 0,
    elapsedSec,
    readsPerSecWall: completed / elapsedSec,
    busyNs,
    readsPerSecBusy: busyNs > 0 ? completed / (busyNs / 1e9) : 0,
    busyFraction: busyNs / 1e9 / elapsedSec,
    deviceReads: d("reads"),
    deviceBytesRead: d("bytesRead"),
    deviceErrors: d("errors"),
    mediaDirect: d("mediaDirect"),
    mediaBounced: d("mediaBounced"),
    sleeps: d("sleeps"),
    wakeups: d("wakeups"),
    irqs: d("irqs"),
    interrupts,
  };
}

function fmtInt(x: number): string {
  return Math.round(x).toLocaleString("en-US");
}

/** The one-line summary of a run. */
export function deviceRateLine(r: DeviceRate): string {
  const size = r.bs % 1024 === 0 ? `${r.bs / 1024}k` : `${r.bs}B`;
  return `device (C, thread) ${size} random reads, qd=${r.qd}, media=${r.media}: ` +
    `${fmtInt(r.readsPerSecWall)} reads/s wall, ` +
    `${fmtInt(r.readsPerSecBusy)} reads/s of device busy time ` +
    `(busy ${Math.round(r.busyFraction * 100)}%), ${r.errors} errors`;
}

/** The details under the summary line: counts, media path taken, device sleeps. */
export function deviceRateDetail(r: DeviceRate): string {
  return `  ${fmtInt(r.reads)} reads in ${r.elapsedSec.toFixed(3)} s, ` +
    `device busy ${(r.busyNs / 1e6).toFixed(1)} ms; media direct ${fmtInt(r.mediaDirect)}, ` +
    `bounced ${fmtInt(r.mediaBounced)}; interrupts ${fmtInt(r.irqs)} raised, ` +
    `${fmtInt(r.interrupts)} handled; device sleeps ${fmtInt(r.sleeps)}, ` +
    `wakeups ${fmtInt(r.wakeups)}`;
}

const USAGE = "usage: deno run -A bench/device_rate.ts [--media=memory,file] [--qd=32] " +
  "[--seconds=2] [--bs=4096] [--media-dir=/var/tmp] [--json]";

/** CLI: one line (and its details) per media kind; `--json` prints the records instead. */
export function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        media: { type: "string", default: "memory,file" },
        qd: { type: "string", default: "32" },
        seconds: { type: "string", default: "2" },
        bs: { type: "string", default: "4096" },
        "media-dir": { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const medias = values.media.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const m of medias) {
    if (m !== "memory" && m !== "file") {
      console.error(`--media: ${m} is not memory or file\n${USAGE}`);
      return 2;
    }
  }
  const num = (flag: string, s: string): number => {
    const n = Number(s);
    if (s.trim() === "" || !Number.isFinite(n)) throw new RangeError(`--${flag}: ${s}`);
    return n;
  };
  let qd: number, seconds: number, bs: number;
  try {
    qd = num("qd", values.qd);
    seconds = num("seconds", values.seconds);
    bs = parseSize("bs", values.bs);
    // The same bounds measureDeviceRate enforces, named by flag before anything runs.
    if (!Number.isInteger(qd) || qd < 1 || qd > 1023) throw new RangeError(`--qd: ${qd} (1..1023)`);
    if (!(seconds > 0) || seconds > 3600) throw new RangeError(`--seconds: ${seconds} (0..3600]`);
    if (bs % PAGE !== 0 || bs > DEVICE_RATE_MAX_BS) {
      throw new RangeError(`--bs: ${values.bs} (a multiple of 4k up to 128k)`);
    }
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const why = nvmeEmuUnavailable();
  if (why !== null) {
    console.error(`device rate: libnvme_emu unavailable: ${why}`);
    return 1;
  }
  const out: DeviceRate[] = [];
  for (const m of medias) {
    const r = measureDeviceRate({
      media: m as "memory" | "file",
      mediaDir: values["media-dir"],
      qd,
      seconds,
      bs,
    });
    out.push(r);
    if (!values.json) {
      console.log(deviceRateLine(r));
      console.log(deviceRateDetail(r));
    }
  }
  if (values.json) console.log(JSON.stringify(out, null, 2));
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
