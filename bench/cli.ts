/**
 * Flag parsing shared by the demo and the benchmark: fio's vocabulary
 * (`--bs=4k,16k`, `--qd=1,16`, `--rw=randread`), `node:util` parseArgs in
 * strict mode so a misspelt or unknown flag is reported by name.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { IOMMU_MODES, type IommuMode } from "../sim/dma/types.ts";
import { PREMAP_VARIANTS, type PremapVariant } from "../sim/kernel.ts";
import type { Backend } from "../sim/uapi/testbed.ts";
import { IO_PATHS, type IoPath, type RwMode, type WorkloadConfig } from "./workload.ts";
import { sizeBytes, sizeLabel } from "./size.ts";
import { isPermissionError } from "./main.ts";

/** A command-line mistake: the message names the flag at fault. */
export class UsageError extends Error {
  /** Build with a message naming the flag. */
  constructor(msg: string) {
    super(msg);
    this.name = "UsageError";
  }
}

/** Parse "4k", "16K", "1m", "1g", "4096" into bytes: a positive multiple of 4k. */
export function parseSize(flag: string, s: string): number {
  const n = sizeBytes(s);
  if (n === null) throw new UsageError(`--${flag}: '${s}' is not a size (e.g. 4k, 64k, 1m, 1g)`);
  if (n <= 0 || n % 4096 !== 0) {
    throw new UsageError(`--${flag}: ${s} must be a positive multiple of 4k`);
  }
  return n;
}

/** Repeated values dropped, first occurrence kept (every list flag). */
export function dedupe<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** Split a comma list and check each item against `allowed`. */
export function parseList<T extends string>(flag: string, s: string, allowed: readonly T[]): T[] {
  const xs = s.split(",").map((x) => x.trim()).filter((x) => x !== "");
  if (xs.length === 0) throw new UsageError(`--${flag}: empty list`);
  for (const x of xs) {
    if (!allowed.includes(x as T)) {
      throw new UsageError(`--${flag}: '${x}' is not one of ${allowed.join(", ")}`);
    }
  }
  return dedupe(xs) as T[];
}

/** Parse a positive integer. */
export function parsePositive(flag: string, s: string, max = 1 << 30): number {
  if (!/^\d+$/.test(s.trim())) throw new UsageError(`--${flag}: '${s}' is not a positive integer`);
  const n = Number(s);
  if (n < 1 || n > max) throw new UsageError(`--${flag}: ${n} outside 1..${max}`);
  return n;
}

/** Everything a run of the demo or the benchmark needs. */
export interface RunOptions {
  /** Backend. */
  backend: Backend;
  /** Buffer paths. */
  paths: IoPath[];
  /** Block sizes. */
  bs: number[];
  /** Queue depths. */
  qd: number[];
  /** Direction(s). */
  rw: RwMode[];
  /** IOMMU modes (sim). */
  iommu: IommuMode[];
  /** Measured I/Os per configuration. */
  ios: number;
  /**
   * Unmeasured I/Os each configuration runs first on the same job (bench
   * `--ramp`, fio's ramp_time counted in I/Os; default {@link defaultRampIos}).
   */
  rampIos?: number;
  /** Bytes of the device each job touches (fio's size; default 64 MiB). */
  sizeBytes?: number;
  /** Runs per configuration (bench `--repeat`; default 1). */
  repeat?: number;
  /** Per-stage wall-time accounting in the host stack (`--stage-timing=0|1`; default on). */
  stageTiming?: boolean;
  /** SQEs per submitting io_uring_enter (fio's iodepth_batch_submit; default 1). */
  submitBatch?: number;
  /** Seed. */
  seed: number;
  /** JSON output path. */
  json?: string;
  /** SVG output path. */
  svg?: string;
  /** HTML report path (bench). */
  html?: string;
  /** Also run fio as the live-kernel reference (bench, `--backend=real` only). */
  fio?: boolean;
  /** Check every byte read (default true); `--verify=0` checks lengths only, as fio does. */
  verify?: boolean;
  /** real: where the emulated namespace keeps its data: a media file (default) or memory. */
  media?: "file" | "memory";
  /** Premap variants to run: "v2" (the posted series, default) and/or "hardened". */
  premap?: PremapVariant[];
  /** CONFIG_DMA_API_DEBUG on the host stack (`--dma-debug=0|1`; demo default on, bench off). */
  dmaDebug?: boolean;
}

/** Parse argv into {@link RunOptions}, with `defaults` for what is not given. */
export function parseRunArgs(args: string[], defaults: RunOptions): RunOptions {
  const argv = args[0] === "--" ? args.slice(1) : args;
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        backend: { type: "string" },
        path: { type: "string" },
        bs: { type: "string" },
        qd: { type: "string" },
        rw: { type: "string" },
        iommu: { type: "string" },
        ios: { type: "string" },
        ramp: { type: "string" },
        iodepth_batch: { type: "string" },
        size: { type: "string" },
        repeat: { type: "string" },
        "stage-timing": { type: "string" },
        seed: { type: "string" },
        json: { type: "string" },
        svg: { type: "string" },
        html: { type: "string" },
        fio: { type: "boolean" },
        verify: { type: "string" },
        media: { type: "string" },
        premap: { type: "string" },
        "dma-debug": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) throw new UsageError("help");
  const o: RunOptions = { ...defaults };
  if (values.backend !== undefined) {
    o.backend = parseList("backend", values.backend, ["sim", "real"] as const)[0];
  }
  if (values.path !== undefined) o.paths = parseList("path", values.path, IO_PATHS);
  if (values.bs !== undefined) o.bs = dedupe(values.bs.split(",").map((x) => parseSize("bs", x)));
  if (values.qd !== undefined) {
    o.qd = dedupe(values.qd.split(",").map((x) => parsePositive("qd", x, 1024)));
  }
  if (values.size !== undefined) {
    o.sizeBytes = parseSize("size", values.size);
    if (o.sizeBytes > MAX_REGION_BYTES) {
      throw new UsageError(
        `--size: ${values.size} is larger than the namespace (${sizeLabel(MAX_REGION_BYTES)})`,
      );
    }
  }
  if (values.rw !== undefined) {
    o.rw = parseList("rw", values.rw, ["randread", "randwrite"] as const);
  }
  if (values.iommu !== undefined) o.iommu = parseList("iommu", values.iommu, IOMMU_MODES);
  if (values.ios !== undefined) o.ios = parsePositive("ios", values.ios, 10_000_000);
  if (values.ramp !== undefined) {
    o.rampIos = values.ramp === "0" ? 0 : parsePositive("ramp", values.ramp, 10_000_000);
  }
  if (values.iodepth_batch !== undefined) {
    o.submitBatch = parsePositive("iodepth_batch", values.iodepth_batch, 1024);
  }
  if (values.repeat !== undefined) o.repeat = parsePositive("repeat", values.repeat, 1000);
  if (values.seed !== undefined) o.seed = parsePositive("seed", values.seed, 0xffffffff);
  if (values.json !== undefined) o.json = values.json;
  if (values.svg !== undefined) o.svg = values.svg;
  if (values.html !== undefined) o.html = values.html;
  if (values.verify !== undefined) {
    if (values.verify !== "0" && values.verify !== "1") {
      throw new UsageError(`--verify: '${values.verify}' is not 0 or 1`);
    }
    o.verify = values.verify === "1";
  }
  const stageTiming = values["stage-timing"];
  if (stageTiming !== undefined) {
    if (stageTiming !== "0" && stageTiming !== "1") {
      throw new UsageError(`--stage-timing: '${stageTiming}' is not 0 or 1`);
    }
    o.stageTiming = stageTiming === "1";
  }
  const dmaDebug = values["dma-debug"];
  if (dmaDebug !== undefined) {
    if (dmaDebug !== "0" && dmaDebug !== "1") {
      throw new UsageError(`--dma-debug: '${dmaDebug}' is not 0 or 1`);
    }
    o.dmaDebug = dmaDebug === "1";
  }
  if (values.premap !== undefined) {
    o.premap = parseList("premap", values.premap, PREMAP_VARIANTS);
  }
  if (values.media !== undefined) {
    o.media = parseList("media", values.media, ["file", "memory"] as const)[0];
    if (o.backend !== "real") {
      throw new UsageError(
        `--media: only the real backend's C controller has media to place (got --backend=${o.backend})`,
      );
    }
  }
  if (values.fio) {
    if (o.backend !== "real") {
      throw new UsageError(
        `--fio: fio is the live-kernel reference and needs --backend=real (got --backend=${o.backend})`,
      );
    }
    o.fio = true;
  }
  return o;
}

/** One flag of the demo or the bench, for --help. */
interface FlagHelp {
  /** `--name=VALUES` as shown. */
  flag: string;
  /** What it does. */
  what: string;
  /** Its default, from the command's defaults (undefined: none). */
  def?: (d: RunOptions) => string | undefined;
  /** Only this command takes it. */
  only?: "bench";
}

const list = (xs: readonly (string | number)[]) => xs.join(",");

const FLAGS: readonly FlagHelp[] = [
  {
    flag: "--backend=sim|real",
    what: "sim: TypeScript host + NVMe model; real: live kernel io_uring + the C controller",
    def: (d) => d.backend,
  },
  { flag: "--path=none,bvec,dma", what: "buffer paths to compare", def: (d) => list(d.paths) },
  {
    flag: "--bs=SIZES",
    what: "block sizes (4k, 64k, 1m, ...)",
    def: (d) => list(d.bs.map(sizeLabel)),
  },
  { flag: "--qd=N,...", what: "queue depths", def: (d) => list(d.qd) },
  { flag: "--rw=randread,randwrite", what: "direction(s)", def: (d) => list(d.rw) },
  {
    flag: "--iommu=off|passthrough|lazy|strict|bounce",
    what: "DMA configuration of the host (a list runs each)",
    def: (d) => list(d.iommu),
  },
  { flag: "--ios=N", what: "measured I/Os per configuration", def: (d) => String(d.ios) },
  {
    flag: "--ramp=N",
    what: "unmeasured I/Os each configuration runs first (fio's ramp_time, in I/Os)",
    def: (d) => d.rampIos === undefined ? `--ios, at most ${RAMP_MAX_IOS}` : String(d.rampIos),
    only: "bench",
  },
  {
    flag: "--size=SIZE",
    what: "region of the device each job touches (fio's size)",
    def: (d) => sizeLabel(d.sizeBytes ?? DEFAULT_REGION_BYTES),
  },
  {
    flag: "--iodepth_batch=N",
    what: "SQEs per submitting io_uring_enter (fio's iodepth_batch_submit)",
    def: (d) => String(d.submitBatch ?? 1),
  },
  { flag: "--seed=N", what: "seed for offsets and data", def: (d) => String(d.seed) },
  {
    flag: "--verify=0|1",
    what: "check every byte read (1) or only lengths (0, like fio)",
    def: (d) => d.verify === false ? "0" : "1",
  },
  {
    flag: "--dma-debug=0|1",
    what: "the DMA-API debug checker (CONFIG_DMA_API_DEBUG)",
    def: (d) => d.dmaDebug === false ? "0" : "1",
  },
  {
    flag: "--stage-timing=0|1",
    what: "per-stage wall time in the host stack (a clock read per stage; 0 for speed runs)",
    def: (d) => d.stageTiming === false ? "0" : "1",
  },
  {
    flag: "--premap=v2,v3,hardened",
    what: "the proposal as posted (v2, v3) and/or the project's safe variant",
    def: (d) => list(d.premap ?? ["v2"]),
  },
  {
    flag: "--media=file|memory",
    what: "real: the emulated namespace's data in a media file or in process memory",
    def: () => "file",
  },
  {
    flag: "--repeat=N",
    what: "runs per configuration: min/median/max of each figure; overlapping paths marked n.s.",
    def: (d) => String(d.repeat ?? 1),
    only: "bench",
  },
  { flag: "--json=FILE", what: "write the records as JSON", only: "bench" },
  { flag: "--svg=FILE", what: "write the charts (vega-lite) as one SVG", only: "bench" },
  {
    flag: "--html=FILE",
    what: "write one self-contained page: the charts and the tables",
    only: "bench",
  },
  {
    flag: "--fio",
    what: "with --backend=real: also run fio on an O_DIRECT file, print deno/fio IOPS",
    only: "bench",
  },
  { flag: "-h, --help", what: "this text" },
];

/** The default ramp's ceiling: enough for the JIT to have compiled the whole path. */
export const RAMP_MAX_IOS = 20_000;

/** Ramp I/Os of a run: `--ramp`, else as many as `--ios`, at most {@link RAMP_MAX_IOS}. */
export function defaultRampIos(o: RunOptions): number {
  return o.rampIos ?? Math.min(o.ios, RAMP_MAX_IOS);
}

/** One point of a run's grid: what varies from job to job. */
export interface GridPoint {
  /** Buffer path. */
  path: IoPath;
  /** Block size in bytes. */
  bs: number;
  /** Queue depth. */
  qd: number;
  /** Direction. */
  rw: RwMode;
  /** Premap variant the testbed runs. */
  premap: PremapVariant;
}

/** The job the demo and the bench run at one grid point: the point plus the run's options. */
export function workloadConfig(o: RunOptions, at: GridPoint): WorkloadConfig {
  return {
    ...at,
    ios: o.ios,
    submitBatch: o.submitBatch,
    seed: o.seed,
    regionBytes: o.sizeBytes ?? DEFAULT_REGION_BYTES,
    verify: o.verify,
  };
}

/** The default region each job touches (fio's size): 64 MiB. */
export const DEFAULT_REGION_BYTES = 64 << 20;
/** The largest: the default namespace's capacity. */
export const MAX_REGION_BYTES = 1 << 30;

/**
 * What a run's options deserve a warning for (not an error): a queue depth
 * above the I/O count leaves one sample per slot, so a percentile is one I/O.
 */
export function warnings(o: RunOptions): string[] {
  const out: string[] = [];
  for (const qd of o.qd) {
    if (qd > o.ios) {
      out.push(
        `--qd=${qd} is above --ios=${o.ios}: at most ${o.ios} I/Os are ever in flight and each ` +
          `latency figure stands on very few samples; raise --ios`,
      );
    }
  }
  return out;
}

/** `--help` text of `command` ("demo" or "bench"): its own flags and their defaults. */
export function usage(command: string, defaults: RunOptions): string {
  const rows = FLAGS.filter((f) => !f.only || f.only === command).map((f) => {
    const d = f.def?.(defaults);
    return [f.flag, d === undefined ? f.what : `${f.what} (default ${d})`];
  });
  const w = Math.max(...rows.map((r) => r[0].length));
  return `usage: deno task ${command} -- [flags]   (relative output paths: from where you ran it)\n` +
    rows.map(([a, b]) => `  ${a.padEnd(w)}  ${b}`).join("\n");
}

/**
 * Parse argv for a command, or print the usage and return the exit code:
 * 0 for --help, 2 (with the message naming the flag) for a mistake.
 */
export function parseOrUsage(
  command: string,
  args: string[],
  defaults: RunOptions,
): RunOptions | number {
  try {
    const o = parseRunArgs(args, defaults);
    if (command !== "bench") {
      if (o.fio) throw new UsageError(`--fio: only the bench runs fio (deno task bench)`);
      if (o.json !== undefined) throw new UsageError(`--json: only the bench writes JSON`);
      if (o.svg !== undefined) throw new UsageError(`--svg: only the bench draws a chart`);
      if (o.html !== undefined) throw new UsageError(`--html: only the bench writes a report`);
      if (o.repeat !== undefined) throw new UsageError(`--repeat: only the bench repeats runs`);
    }
    for (const w of warnings(o)) console.error(`${command}: warning: ${w}`);
    return o;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message === "help") {
      console.log(usage(command, defaults));
      return 0;
    }
    console.error(`${command}: ${e.message}`);
    console.error(`(deno task ${command} -- --help lists the flags)`);
    return 2;
  }
}

/**
 * Where `deno task` was run from: `deno task` runs in the repository root and
 * sets INIT_CWD to the directory the user ran it in. Undefined when unset or
 * when env access is not granted.
 */
export function initCwd(): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "INIT_CWD" }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get("INIT_CWD") || undefined;
  } catch {
    return undefined;
  }
}

/**
 * An output path as the user meant it: a relative one is taken from `base`
 * (INIT_CWD by default; null: the process's working directory).
 */
export function resolveOutput(path: string, base: string | null = initCwd() ?? null): string {
  if (path.startsWith("/") || base === null) return path;
  return `${base.replace(/\/+$/, "")}/${path}`;
}

/**
 * Check before a run that `path` can be written: its directory exists and the
 * file can be opened for writing (nothing is truncated; a file created by the
 * check is removed). Returns the message naming the flag, or null.
 */
export function checkOutput(flag: string, path: string): string | null {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  try {
    if (!Deno.statSync(dir).isDirectory) return `--${flag}=${path}: ${dir} is not a directory`;
  } catch (e) {
    if (isPermissionError(e)) throw e;
    return `--${flag}=${path}: directory ${dir} does not exist`;
  }
  let existed = true;
  try {
    Deno.statSync(path);
  } catch (e) {
    if (isPermissionError(e)) throw e;
    existed = false;
  }
  try {
    Deno.openSync(path, { write: true, create: true }).close();
    if (!existed) Deno.removeSync(path);
  } catch (e) {
    if (isPermissionError(e)) throw e;
    return `--${flag}=${path}: cannot write it (${(e as Error).message})`;
  }
  return null;
}
