/**
 * fio as the live-kernel reference for the benchmark's `none` and `bvec`
 * paths: one fio job (`--ioengine=io_uring --direct=1 --registerfiles=1`,
 * `--fixedbufs=0` for `none`, `1` for `bvec`) doing the work one
 * {@link runWorkload} job does, parsed into a {@link WorkloadRecord} with
 * `backend: "fio"`.
 *
 * fio 3.33 (Debian 12) picks IORING_OP_READ/WRITE (non-vectored) when the
 * kernel probes them, and READ_FIXED/WRITE_FIXED with `fixedbufs=1`: the same
 * opcodes our ring sends. Its `slat` is fio's own: from the I/O unit's start
 * to the return of the submitting io_uring_enter, per I/O; ours is the whole
 * io_uring_enter that submitted each I/O (one per I/O by default, as fio's).
 *
 * @module
 */

import type { IoPath, RwMode, WorkloadRecord } from "./workload.ts";
import { P999_MIN_SAMPLES, WorkloadError } from "./workload.ts";

/** One fio job: the work of one benchmark configuration. */
export interface FioJob {
  /** `none` (fixedbufs=0) or `bvec` (fixedbufs=1); fio has no premapped path. */
  path: Exclude<IoPath, "dma">;
  /** Block size in bytes. */
  bs: number;
  /** Queue depth (fio's iodepth). */
  qd: number;
  /** Direction. */
  rw: RwMode;
  /** I/Os to run (fio's number_ios). */
  ios: number;
  /** Bytes of the file the job touches (fio's size; the workload's default is 64 MiB). */
  regionBytes: number;
  /** The target file, or a block device. */
  filename: string;
  /** The target is a block device (the loop device): neither created nor removed. */
  device?: boolean;
  /** fio's own bound on the job, in seconds (fio's runtime). */
  runtimeSec: number;
}

/**
 * fio's command line for a job (without the `fio` itself). Pure: the same job
 * gives the same arguments. `--thread` keeps the job in fio's own process (as
 * our ring is in ours), so killing fio leaves no job process behind;
 * `--io_size` lets `--number_ios` exceed one pass over `--size` (fio stops at
 * `size` bytes otherwise).
 */
export function fioArgs(job: FioJob): string[] {
  return [
    `--name=premap-${job.path}-${job.rw}-${job.bs}-qd${job.qd}`,
    "--thread",
    `--filename=${job.filename}`,
    "--ioengine=io_uring",
    "--direct=1",
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.qd}`,
    `--size=${job.regionBytes}`,
    `--io_size=${job.ios * job.bs}`,
    `--number_ios=${job.ios}`,
    "--registerfiles=1",
    `--fixedbufs=${job.path === "bvec" ? 1 : 0}`,
    "--slat_percentiles=1",
    "--percentile_list=50:99:99.9",
    `--runtime=${job.runtimeSec}`,
    "--output-format=json",
  ];
}

function num(o: unknown, key: string, where: string): number {
  const v = (o as Record<string, unknown> | undefined)?.[key];
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new WorkloadError(`fio JSON: ${where}.${key} is not a number`);
  }
  return v;
}

function latency(o: unknown, where: string, samples: number): WorkloadRecord["slat"] {
  const pct = (o as Record<string, unknown> | undefined)?.percentile;
  return {
    mean: Math.round(num(o, "mean", where)),
    p50: Math.round(num(pct, "50.000000", `${where}.percentile`)),
    p99: Math.round(num(pct, "99.000000", `${where}.percentile`)),
    p999: samples >= P999_MIN_SAMPLES
      ? Math.round(num(pct, "99.900000", `${where}.percentile`))
      : null,
    samples,
  };
}

/**
 * Parse fio's `--output-format=json` output for `job` into a record. Text
 * fio prints before the JSON (warnings) is skipped. `verified` means fio
 * reported no error and completed every I/O in full; fio does not check the
 * data (no `--verify`), unlike our workload.
 */
export function parseFioJson(text: string, job: FioJob): WorkloadRecord {
  const start = text.indexOf("{");
  if (start < 0) throw new WorkloadError(`fio printed no JSON: ${text.slice(0, 200)}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text.slice(start));
  } catch (e) {
    throw new WorkloadError(`fio JSON: ${(e as Error).message}`);
  }
  const jobs = (doc as { jobs?: unknown[] }).jobs;
  if (!Array.isArray(jobs) || jobs.length !== 1) {
    throw new WorkloadError("fio JSON: expected exactly one job");
  }
  const j = jobs[0] as Record<string, unknown>;
  const dir = job.rw === "randread" ? "read" : "write";
  const d = j[dir];
  const totalIos = num(d, "total_ios", dir);
  const ioBytes = num(d, "io_bytes", dir);
  return {
    backend: "fio",
    premap: "n/a",
    path: job.path,
    bs: job.bs,
    qd: job.qd,
    rw: job.rw,
    iommu: "n/a",
    ios: totalIos,
    target: job.filename,
    iops: Math.round(num(d, "iops", dir)),
    slat: latency((d as Record<string, unknown>).slat_ns, `${dir}.slat_ns`, totalIos),
    clat: latency((d as Record<string, unknown>).clat_ns, `${dir}.clat_ns`, totalIos),
    cpuNsPerIo: null,
    perIo: null,
    perIoBySide: null,
    model: null,
    stageNsPerIo: null,
    verified: num(j, "error", "job") === 0 && totalIos === job.ios &&
      ioBytes === job.ios * job.bs,
    // fio runs without its verify options here: lengths and errors only.
    dataChecked: false,
    exposure: null,
  };
}

async function runBounded(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  const child = new Deno.Command("fio", { args, stdout: "piped", stderr: "piped" }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Why fio cannot run here (not on PATH, or it does not answer), or null when
 * it can. The reason says how to install it.
 */
export async function fioUnavailable(timeoutMs = 10_000): Promise<string | null> {
  try {
    const r = await runBounded(["--version"], timeoutMs);
    if (r.timedOut) return `'fio --version' did not answer in ${timeoutMs} ms`;
    if (r.code !== 0) return `'fio --version' exited ${r.code}: ${r.stderr.trim()}`;
    return null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return "fio is not installed (no 'fio' on PATH): install it with apt-get install -y fio";
    }
    if (e instanceof Deno.errors.PermissionDenied) return "running fio needs --allow-run";
    throw e;
  }
}

/**
 * Run one fio job and return its record. The target is set up as our
 * workload's is: for randwrite a new sparse file of `regionBytes`; for
 * randread fio lays the file out (writes it) first, so reads hit written
 * blocks. The file is removed afterwards. fio is bounded by its own
 * `--runtime` and killed from here after `timeoutMs`. Throws
 * {@link WorkloadError} when fio fails, times out or prints bad JSON.
 */
export async function runFio(job: FioJob, timeoutMs = (job.runtimeSec + 60) * 1000): Promise<
  WorkloadRecord
> {
  if (!job.device) await Deno.remove(job.filename).catch(() => {});
  if (job.rw === "randwrite" && !job.device) {
    const f = await Deno.open(job.filename, { write: true, create: true, truncate: true });
    try {
      await f.truncate(job.regionBytes);
    } finally {
      f.close();
    }
  }
  try {
    const r = await runBounded(fioArgs(job), timeoutMs);
    if (r.timedOut) throw new WorkloadError(`fio killed after ${timeoutMs} ms`);
    if (r.code !== 0) {
      throw new WorkloadError(`fio exited ${r.code}: ${r.stderr.trim().slice(-300)}`);
    }
    return parseFioJson(r.stdout, job);
  } finally {
    if (!job.device) await Deno.remove(job.filename).catch(() => {});
  }
}
