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
import { IO_PATHS, type IoPath, type RwMode } from "./workload.ts";

/** A command-line mistake: the message names the flag at fault. */
export class UsageError extends Error {
  /** Build with a message naming the flag. */
  constructor(msg: string) {
    super(msg);
    this.name = "UsageError";
  }
}

/** Parse "4k", "16K", "1m", "4096" into bytes. */
export function parseSize(flag: string, s: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(s.trim());
  if (!m) throw new UsageError(`--${flag}: '${s}' is not a size (e.g. 4k, 64k, 4096)`);
  const n = Number(m[1]) * (m[2] === "" ? 1 : m[2].toLowerCase() === "k" ? 1024 : 1 << 20);
  if (n <= 0 || n % 4096 !== 0) {
    throw new UsageError(`--${flag}: ${s} must be a positive multiple of 4k`);
  }
  return n;
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
  return xs as T[];
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
  /** SQEs per submitting io_uring_enter (fio's iodepth_batch_submit; default 1). */
  submitBatch?: number;
  /** Seed. */
  seed: number;
  /** JSON output path. */
  json?: string;
  /** SVG output path. */
  svg?: string;
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
        iodepth_batch: { type: "string" },
        seed: { type: "string" },
        json: { type: "string" },
        svg: { type: "string" },
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
  if (values.bs !== undefined) o.bs = values.bs.split(",").map((x) => parseSize("bs", x));
  if (values.qd !== undefined) o.qd = values.qd.split(",").map((x) => parsePositive("qd", x, 1024));
  if (values.rw !== undefined) {
    o.rw = parseList("rw", values.rw, ["randread", "randwrite"] as const);
  }
  if (values.iommu !== undefined) o.iommu = parseList("iommu", values.iommu, IOMMU_MODES);
  if (values.ios !== undefined) o.ios = parsePositive("ios", values.ios, 10_000_000);
  if (values.iodepth_batch !== undefined) {
    o.submitBatch = parsePositive("iodepth_batch", values.iodepth_batch, 1024);
  }
  if (values.seed !== undefined) o.seed = parsePositive("seed", values.seed, 0xffffffff);
  if (values.json !== undefined) o.json = values.json;
  if (values.svg !== undefined) o.svg = values.svg;
  if (values.verify !== undefined) {
    if (values.verify !== "0" && values.verify !== "1") {
      throw new UsageError(`--verify: '${values.verify}' is not 0 or 1`);
    }
    o.verify = values.verify === "1";
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

/** The flags, for --help and usage errors. */
export const USAGE = `flags (fio's words where fio has one):
  --backend=sim|real         sim (default): TypeScript host + NVMe model; real: live kernel io_uring
  --path=none,bvec,dma       buffer paths to compare
  --bs=4k,16k,64k            block sizes
  --qd=1,16                  queue depths
  --rw=randread|randwrite    direction (a comma list runs both)
  --iommu=off|passthrough|lazy|strict|bounce   DMA configuration of the simulated host
  --ios=N                    measured I/Os per configuration
  --iodepth_batch=N          SQEs per submitting io_uring_enter (fio's iodepth_batch_submit;
                             default 1, as fio: each I/O its own call, its slat that call)
  --seed=N                   seed for offsets and data
  --verify=0|1               check every byte read (1, default) or only lengths (0, like fio)
  --dma-debug=0|1            the DMA-API debug checker (CONFIG_DMA_API_DEBUG): on in the demo,
                             off in bench (it costs the mapping paths more than dma)
  --premap=v2,v3,hardened    the proposal as posted (v2, default; v3) and/or the project's safe variant
  --media=file|memory        real: the emulated namespace's data in a media file (default, read
                             and written O_DIRECT by the device) or in process memory
  --json=FILE  --svg=FILE    write the records / a chart
  --fio                      bench with --backend=real: also run fio (io_uring, O_DIRECT file,
                             fixedbufs=0 for none, 1 for bvec) and print deno/fio IOPS`;

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
    }
    return o;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message !== "help") console.error(`${command}: ${e.message}`);
    console.error(`usage: deno task ${command} -- [flags]\n${USAGE}`);
    return e.message === "help" ? 0 : 2;
  }
}
