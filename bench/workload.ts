/**
 * One fio-like job on a testbed: random reads or writes of `bs` bytes at
 * queue depth `qd` on the NVMe namespace (or, on a backend without one, an
 * O_DIRECT scratch file), through one of the three buffer paths:
 *
 * - `none`: READ/WRITE with a plain user address (pages pinned per I/O);
 * - `bvec`: READ_FIXED/WRITE_FIXED on registered buffers;
 * - `dma`:  the same, with the buffers premapped by IORING_REGISTER_MAP_BUFFERS.
 *
 * All three use a fixed file (slot 0), since premapping requires one; so the
 * only difference between them is the buffer path. Every byte read is
 * checked against what was last written there (a shadow copy), and every
 * completion's result must be the full length.
 *
 * @module
 */

import { Rng } from "../sim/random.ts";
import { Stats, type StatsSnapshot } from "../sim/stats.ts";
import { O } from "../sim/uapi/io_uring.ts";
import { IOSQE, type Ring, type UserBuffer } from "../sim/uapi/ring_api.ts";
import type { Testbed } from "../sim/uapi/testbed.ts";
import { describeResult, Errno } from "../sim/uapi/errno.ts";
import { type CountsBySide, type ModelCost, modelCost } from "./cost_model.ts";
import { rmdirIfEmpty } from "../ffi/testbed.ts";
import type { RepeatSpread } from "./repeat.ts";

/** The three buffer paths. */
export type IoPath = "none" | "bvec" | "dma";
/** All paths in display order. */
export const IO_PATHS: readonly IoPath[] = ["none", "bvec", "dma"];
/** fio's rw= values supported. */
export type RwMode = "randread" | "randwrite";

/** One job. */
export interface WorkloadConfig {
  /** The premap variant the testbed was opened with, recorded in the result (default "v2"). */
  premap?: string;
  /** Buffer path. */
  path: IoPath;
  /** Block size in bytes (multiple of 4096). */
  bs: number;
  /** Queue depth. */
  qd: number;
  /** Direction. */
  rw: RwMode;
  /** Measured I/Os. */
  ios: number;
  /** Seed for offsets and data. */
  seed: number;
  /**
   * Unmeasured I/Os run first on the same job, with their own offsets (fio's
   * ramp_time, counted in I/Os so a seeded run stays deterministic): the
   * measured I/Os then time compiled code, not the JIT. Default 0.
   */
  rampIos?: number;
  /**
   * SQEs per submitting io_uring_enter (fio's iodepth_batch_submit; default 1,
   * as fio's): at QD16 each I/O is submitted by its own call, as in the
   * published runs.
   */
  submitBatch?: number;
  /**
   * An existing file or block device to run on, opened O_RDWR | O_DIRECT and
   * left as it is (at least `regionBytes` long); default: the testbed's NVMe
   * namespace, else a scratch file.
   */
  target?: string;
  /** Bytes of the device the job touches (default 64 MiB). */
  regionBytes?: number;
  /**
   * Check every byte read against the shadow of what was written (default
   * true). With false only each completion's length is checked, which is
   * what fio does without its verify options.
   */
  verify?: boolean;
}

/** Latency summary in nanoseconds. */
export interface LatencyNs {
  /** Mean. */
  mean: number;
  /** Median. */
  p50: number;
  /** 99th percentile. */
  p99: number;
  /**
   * 99.9th percentile: null unless at least {@link P999_MIN_SAMPLES} samples
   * stand behind it (below that it is one of the few largest samples).
   */
  p999: number | null;
  /** How many samples the figures stand on. */
  samples: number;
}

/** The fewest samples a p99.9 is reported from (10 above it). */
export const P999_MIN_SAMPLES = 10_000;

/** One JSON record per configuration (the design's benchmark record). */
export interface WorkloadRecord {
  /** "sim", "real", or "fio" for the live-kernel reference rows of bench/fio.ts. */
  backend: string;
  /** Buffer path. */
  path: IoPath;
  /** Block size. */
  bs: number;
  /** Queue depth. */
  qd: number;
  /** Direction. */
  rw: RwMode;
  /** IOMMU mode of the simulated host ("n/a" on real). */
  iommu: string;
  /** Which variant of the proposal ran: "v2" (the posted series, default) or "hardened". */
  premap: string;
  /** Measured I/Os. */
  ios: number;
  /** What the I/O went to: a block device path or a scratch file. */
  target: string;
  /** I/Os per second of wall time (sim: the cost of running the simulation in TypeScript). */
  iops: number;
  /** Submission latency: wall time of the io_uring_enter that submitted each I/O (fio's slat). */
  slat: LatencyNs;
  /** Completion latency: submission to reaped CQE, wall time. */
  clat: LatencyNs;
  /** Host-stack CPU ns per I/O (sim: the sum of host stage times, device excluded). */
  cpuNsPerIo: number | null;
  /** Per-I/O counts of every representation built (both sides; null where none are kept). */
  perIo: Record<string, number> | null;
  /**
   * The same counts split by side: submission (up to the doorbell, what slat
   * holds) and completion (the interrupt and what runs from it, a waiting enter).
   */
  perIoBySide: CountsBySide | null;
  /** The modelled kernel cost of one I/O from these counts (`bench/cost_model.ts`). */
  model: ModelCost | null;
  /** Per-I/O ns by stage (sim only). */
  stageNsPerIo: Record<string, number> | null;
  /** Whether every completion was full-length and (unless `verify` was off) every byte matched. */
  verified: boolean;
  /** Whether bytes read were checked (`WorkloadConfig.verify`). */
  dataChecked: boolean;
  /**
   * DMA exposure over the measured run (where the testbed has a host stack):
   * bytes mapped for the device but not in use by an in-flight I/O, averaged
   * over wall time, and integrated (MiB x s). Premapping trades per-I/O
   * mapping work for this.
   */
  exposure?: { idleMappedBytesMean: number; idleMappedMiBSeconds: number } | null;
  /** With `--repeat=N`: min/median/max of each figure over the N runs (this record: the median). */
  spread?: RepeatSpread;
}

/** A job that could not run, with the reason (e.g. MAP_BUFFERS refused). */
export class WorkloadError extends Error {
  /** Build with a message naming the call that failed. */
  constructor(msg: string) {
    super(msg);
    this.name = "WorkloadError";
  }
}

function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)];
}

/** Mean and percentiles of latency samples, to the ns (what a wall clock can mean). */
export function summarize(xs: number[]): LatencyNs {
  // A Float64Array sorts numerically without a comparator call per step.
  const s = Float64Array.from(xs).sort();
  const mean = s.reduce((a, b) => a + b, 0) / Math.max(1, s.length);
  return {
    mean: Math.round(mean),
    p50: Math.round(percentile(s, 50)),
    p99: Math.round(percentile(s, 99)),
    p999: s.length >= P999_MIN_SAMPLES ? Math.round(percentile(s, 99.9)) : null,
    samples: s.length,
  };
}

/** Round per-I/O figures to what they mean: counts to 1e-4 (1 in 10,000 I/Os), ns to the ns. */
function roundCounts(c: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Math.round(v * 1e4) / 1e4]));
}

function roundNs(c: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Math.round(v)]));
}

function fillPattern(buf: Uint8Array, offset: number, gen: number): void {
  // Cheap, position-dependent pattern: every 4-byte word names its offset and generation.
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    v.setUint32(i, (offset + i) ^ (gen * 0x9e3779b1), true);
  }
}

interface Slot {
  buf: UserBuffer;
  index: number;
  busy: boolean;
  offset: number;
  gen: number;
  write: boolean;
  submittedAt: number;
}

/** Mixed into the seed of the ramp's offsets. */
const RAMP_SEED = 0x7a3b_91c5;

/** Sets up the target and buffers for one job and runs I/Os on it. */
class Job implements Disposable {
  readonly ring: Ring;
  readonly slots: Slot[] = [];
  readonly fd: number;
  readonly target: string;
  readonly shadow = new Map<number, number>(); // block offset -> generation written (0 = zero)
  readonly blocks: number;
  #gen = 0;
  #errors: string[] = [];
  readonly #tb: Testbed;
  readonly #cfg: WorkloadConfig;

  /** The host's live streaming DMA mappings in bytes (undefined without a host stack). */
  get dmaMappedBytes(): number | undefined {
    return this.#tb.dmaMappedBytes;
  }

  constructor(tb: Testbed, cfg: WorkloadConfig) {
    this.#tb = tb;
    this.#cfg = cfg;
    const region = cfg.regionBytes ?? 64 << 20;
    this.blocks = Math.floor(region / cfg.bs);
    if (this.blocks < 4 * cfg.qd) {
      throw new WorkloadError(
        `region ${region} B holds ${this.blocks} blocks of ${cfg.bs} B: need at least 4 x qd (${
          4 * cfg.qd
        })`,
      );
    }
    if (cfg.target !== undefined) {
      // An existing file or block device (the live reference's loop device): used as it is.
      this.target = cfg.target;
      this.fd = tb.open(this.target, O.RDWR | O.DIRECT);
    } else if (tb.nvmeDevice) {
      this.target = tb.nvmeDevice;
      this.fd = tb.open(this.target, O.RDWR | O.DIRECT);
    } else {
      this.target = tb.tempPath(`job-${cfg.path}-${cfg.bs}-${cfg.qd}.dat`);
      this.fd = tb.open(this.target, O.RDWR | O.CREAT | O.TRUNC | O.DIRECT, 0o644);
    }
    if (this.fd < 0) throw new WorkloadError(`open ${this.target}: ${describeResult(this.fd)}`);
    if (cfg.target === undefined && !tb.nvmeDevice && tb.backend === "real") {
      // A scratch file on the live kernel: unlinked as soon as it is open (the descriptor keeps
      // it), so an interrupted run (Ctrl-C kills the process mid-I/O) leaves nothing behind.
      Deno.removeSync(this.target);
      rmdirIfEmpty(this.target.slice(0, this.target.lastIndexOf("/")));
    }
    this.ring = tb.ring({ entries: Math.max(8, cfg.qd * 2) });
    const rf = this.ring.registerFiles([this.fd]);
    if (!rf.ok) throw new WorkloadError(`IORING_REGISTER_FILES: ${describeResult(rf.res)}`);
    for (let i = 0; i < cfg.qd; i++) {
      this.slots.push({
        buf: tb.allocBuffer(cfg.bs),
        index: i,
        busy: false,
        offset: 0,
        gen: 0,
        write: false,
        submittedAt: 0,
      });
    }
    if (cfg.path !== "none") {
      const rb = this.ring.registerBuffers(
        this.slots.map((s) => ({ addr: s.buf.addr, len: cfg.bs })),
      );
      if (!rb.ok) throw new WorkloadError(`IORING_REGISTER_BUFFERS: ${describeResult(rb.res)}`);
    }
    if (!tb.nvmeDevice && cfg.target === undefined) this.#extendFile();
    if (cfg.path === "dma") {
      const mb = this.ring.mapBuffers(0, 0, cfg.qd);
      if (!mb.ok) {
        const why = tb.backend === "real"
          ? " (answered by the real backend: the live kernel has no such opcode, so it is not sent)"
          : "";
        throw new WorkloadError(
          `IORING_REGISTER_MAP_BUFFERS on ${this.target}: ${describeResult(mb.res)}${why}`,
        );
      }
    }
  }

  /** Give a scratch file the region's size (its last block written), so unwritten blocks read as zeros. */
  #extendFile(): void {
    const s = this.slots[0];
    s.buf.bytes.fill(0);
    const at = BigInt((this.blocks - 1) * this.#cfg.bs);
    this.ring.write(0, s.buf.addr, this.#cfg.bs, at, { flags: IOSQE.FIXED_FILE });
    const [c] = this.ring.submitAndReap(1);
    if (c.res !== this.#cfg.bs) {
      throw new WorkloadError(`sizing ${this.target}: write returned ${describeResult(c.res)}`);
    }
  }

  get errors(): string[] {
    return this.#errors;
  }

  /** Queue one I/O on a free slot. */
  queue(s: Slot, offset: number, write: boolean): void {
    const { bs, path } = this.#cfg;
    s.busy = true;
    s.offset = offset;
    s.write = write;
    if (write) {
      s.gen = ++this.#gen;
      fillPattern(s.buf.bytes, offset, s.gen);
    } else {
      s.gen = this.shadow.get(offset) ?? 0;
    }
    const o = { userData: BigInt(s.index), flags: IOSQE.FIXED_FILE };
    const off = BigInt(offset);
    let ok: boolean;
    if (path === "none") {
      ok = write
        ? this.ring.write(0, s.buf.addr, bs, off, o)
        : this.ring.read(0, s.buf.addr, bs, off, o);
    } else {
      ok = write
        ? this.ring.writeFixed(0, s.buf.addr, bs, off, s.index, o)
        : this.ring.readFixed(0, s.buf.addr, bs, off, s.index, o);
    }
    if (!ok) throw new WorkloadError("SQ full with a free slot: ring too small");
  }

  /** Check a completed slot; returns false on a short I/O or a data mismatch. */
  complete(s: Slot, res: number): boolean {
    s.busy = false;
    const { bs } = this.#cfg;
    if (res !== bs) {
      this.#errors.push(
        `${s.write ? "write" : "read"} at ${s.offset}: res ${describeResult(res)}, want ${bs}`,
      );
      return false;
    }
    if (s.write) {
      this.shadow.set(s.offset, s.gen);
      return true;
    }
    if (this.#cfg.verify === false) return true;
    const want = new Uint8Array(bs);
    if (s.gen !== 0) fillPattern(want, s.offset, s.gen);
    const got = s.buf.bytes;
    for (let i = 0; i < bs; i++) {
      if (got[i] !== want[i]) {
        this.#errors.push(
          `read at ${s.offset}: byte ${i} is ${got[i]}, want ${want[i]} (gen ${s.gen})`,
        );
        return false;
      }
    }
    return true;
  }

  [Symbol.dispose](): void {
    this.ring[Symbol.dispose]();
    for (const s of this.slots) s.buf[Symbol.dispose]();
    this.#tb.close(this.fd);
  }
}

/**
 * Run `n` I/Os at queue depth qd. Returns per-I/O slat/clat samples.
 * `pickWrite` decides each I/O's direction, `rng` its offset.
 */
function drive(
  job: Job,
  n: number,
  pickBlock: () => number,
  pickWrite: () => boolean,
  bs: number,
  batch: number,
): { slat: number[]; clat: number[]; ok: boolean; idleByteMs: number } {
  const slat: number[] = [];
  const clat: number[] = [];
  let issued = 0;
  let done = 0;
  let ok = true;
  // Exposure: mapped-but-idle bytes, sampled at every step, held constant between samples.
  let idleByteMs = 0;
  let lastT = performance.now();
  let lastIdle = 0;
  // Sampled at a clock reading the caller already took (one clock read fewer per step).
  const sample = (now: number) => {
    const mapped = job.dmaMappedBytes;
    if (mapped === undefined) return;
    idleByteMs += lastIdle * (now - lastT);
    lastT = now;
    lastIdle = Math.max(0, mapped - (issued - done) * bs);
  };
  sample(lastT);
  let lastEnter = lastT;
  const inFlight = new Set<number>(); // block offsets in flight: never two I/Os on one block
  // One io_uring_enter per `batch` queued I/Os (fio's iodepth_batch_submit, default 1); each
  // I/O's slat is the whole call that carried it, as fio measures it.
  const enter = (queued: Slot[]) => {
    const t0 = performance.now();
    const r = job.ring.submit(0);
    const t1 = performance.now();
    lastEnter = t1;
    if (!r.ok) throw new WorkloadError(`io_uring_enter: ${describeResult(r.res)}`);
    for (const s of queued) {
      slat.push((t1 - t0) * 1e6);
      s.submittedAt = t0;
    }
  };
  while (done < n) {
    let queued: Slot[] = [];
    for (const s of job.slots) {
      if (s.busy || issued >= n) continue;
      let off: number;
      do off = pickBlock() * bs; while (inFlight.has(off));
      inFlight.add(off);
      job.queue(s, off, pickWrite());
      issued++;
      queued.push(s);
      if (queued.length >= batch) {
        enter(queued);
        queued = [];
      }
    }
    if (queued.length) enter(queued);
    // Nothing changed since the last sample unless something was submitted.
    if (lastEnter > lastT) sample(lastEnter);
    let w = job.ring.submit(1);
    // A signal (a profiler's, a debugger's) interrupts the wait: retry, as applications do.
    while (w.res === -Errno.EINTR) w = job.ring.submit(1);
    if (!w.ok) throw new WorkloadError(`io_uring_enter(wait): ${describeResult(w.res)}`);
    const now = performance.now();
    for (const c of job.ring.reap()) {
      const s = job.slots[Number(c.userData)];
      clat.push((now - s.submittedAt) * 1e6);
      s.submittedAt = 0;
      inFlight.delete(s.offset);
      if (!job.complete(s, c.res)) ok = false;
      done++;
    }
    sample(now);
  }
  return { slat, clat, ok, idleByteMs };
}

/**
 * Run one job on a testbed and return its record. Reads are preceded by an
 * unmeasured write pass over the blocks they will touch, so every read
 * checks real data.
 */
export function runWorkload(tb: Testbed, cfg: WorkloadConfig, iommu = "n/a"): WorkloadRecord {
  using job = new Job(tb, cfg);
  const rng = new Rng(cfg.seed);
  // Reads touch only blocks this job wrote first (an unmeasured sequential pass), so every read
  // checks known data even on a device earlier jobs wrote to.
  let span = job.blocks;
  // Without byte checks on a given target (the live reference, laid out beforehand), reads range
  // over the whole region, as fio's do; otherwise over blocks this job wrote first.
  const anyBlock = cfg.verify === false && cfg.target !== undefined;
  if (cfg.rw === "randread" && !anyBlock) {
    span = Math.min(job.blocks, Math.max(256, 4 * cfg.qd));
    let next = 0;
    const pre = drive(job, span, () => next++, () => true, cfg.bs, cfg.qd);
    if (!pre.ok) throw new WorkloadError(`prefill failed: ${job.errors.slice(0, 3).join("; ")}`);
  }
  const batch = cfg.submitBatch ?? 1;
  if (cfg.rampIos) {
    // The ramp draws from its own generator: the measured I/Os are the same with or without it.
    const rampRng = new Rng(cfg.seed ^ RAMP_SEED);
    const write = () => cfg.rw === "randwrite";
    const ramp = drive(job, cfg.rampIos, () => rampRng.int(span), write, cfg.bs, batch);
    if (!ramp.ok) throw new WorkloadError(`ramp failed: ${job.errors.slice(0, 3).join("; ")}`);
  }
  const stats = tb.stats;
  const before: StatsSnapshot | undefined = stats?.snapshot();
  const t0 = performance.now();
  const r = drive(job, cfg.ios, () => rng.int(span), () => cfg.rw === "randwrite", cfg.bs, batch);
  const elapsedMs = performance.now() - t0;
  let perIo: Record<string, number> | null = null;
  let perIoBySide: CountsBySide | null = null;
  let stageNsPerIo: Record<string, number> | null = null;
  let cpuNsPerIo: number | null = null;
  if (stats && before) {
    const d = Stats.diff(before, stats.snapshot(), cfg.ios);
    perIo = roundCounts(d.counters);
    const sides = Stats.bySide(d);
    perIoBySide = {
      submission: roundCounts(sides.submission),
      completion: roundCounts(sides.completion),
    };
    // Without stage timing (a speed run) no host time was measured: null, not 0.
    stageNsPerIo = stats.timing ? roundNs(d.stageNs) : null;
    cpuNsPerIo = !stats.timing ? null : Math.round(
      Object.entries(d.stageNs).filter(([k]) => k !== "device").reduce((a, [, v]) => a + v, 0),
    );
  }
  return {
    backend: tb.backend,
    path: cfg.path,
    bs: cfg.bs,
    qd: cfg.qd,
    rw: cfg.rw,
    iommu,
    premap: cfg.premap ?? "v2",
    ios: cfg.ios,
    target: job.target,
    iops: Math.round(cfg.ios / (elapsedMs / 1000)),
    slat: summarize(r.slat),
    clat: summarize(r.clat),
    cpuNsPerIo,
    perIo,
    perIoBySide,
    model: perIoBySide ? modelCost(perIoBySide) : null,
    stageNsPerIo,
    verified: r.ok && job.errors.length === 0,
    dataChecked: cfg.verify !== false,
    exposure: tb.dmaMappedBytes === undefined ? null : {
      idleMappedBytesMean: Math.round(r.idleByteMs / elapsedMs),
      idleMappedMiBSeconds: Number((r.idleByteMs / 1000 / 2 ** 20).toFixed(3)),
    },
    ...(job.errors.length ? { firstErrors: job.errors.slice(0, 3) } : {}),
  };
}

/**
 * Run every path at every size in both directions, unmeasured, so the JIT
 * has compiled each before the first measured job (otherwise whichever
 * table runs first is measured cold). Paths that cannot run here (e.g.
 * `dma` on the live kernel) are skipped.
 */
export function warmUp(
  tb: Testbed,
  paths: readonly IoPath[],
  sizes: readonly number[],
  qd: number,
  seed: number,
): void {
  for (const rw of ["randwrite", "randread"] as const) {
    for (const bs of sizes) {
      for (const path of paths) {
        try {
          runWorkload(tb, { path, bs, qd, rw, ios: 200, seed, regionBytes: 16 << 20 });
        } catch (e) {
          if (!(e instanceof WorkloadError)) throw e;
        }
      }
    }
  }
}
