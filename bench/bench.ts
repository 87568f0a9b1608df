/**
 * The none/bvec/dma benchmark: one record per configuration, as a table,
 * JSON (`--json`) and an SVG chart of per-I/O host time (`--svg`).
 *
 *   deno task bench -- --backend=sim --path=none,bvec,dma --bs=4k,16k,64k --qd=1,16 \
 *       --rw=randread --iommu=strict --ios=2000 --json=out.json --svg=out.svg
 *
 * With `--backend=real --fio`, fio runs the same work for `none` and `bvec`
 * beside our ring (records with `backend: "fio"`) and a `deno/fio IOPS` line
 * per configuration is printed.
 *
 * @module
 */

import { openTestbed, realBackendUnavailable } from "../mod.ts";
import { parseOrUsage, type RunOptions } from "./cli.ts";
import { runWorkload, warmUp, WorkloadError, type WorkloadRecord } from "./workload.ts";
import {
  barChartSvg,
  iopsRatioLines,
  perIoTable,
  publishedComparison,
  summaryTable,
} from "./report.ts";
import { fioUnavailable, runFio } from "./fio.ts";
import { realNvmeUnavailable } from "../ffi/testbed.ts";
import type { IommuMode } from "../sim/dma/types.ts";

const DEFAULTS: RunOptions = {
  backend: "sim",
  paths: ["none", "bvec", "dma"],
  bs: [4096, 16384, 65536],
  qd: [1, 16],
  rw: ["randread"],
  // Lazy first: the published runs' most likely mode (x86 default since 5.15); strict beside it.
  iommu: ["lazy", "strict"],
  ios: 2000,
  seed: 1,
  // The checker's bookkeeping is per mapping, so it slows none/bvec more than dma: off when timing.
  dmaDebug: false,
};

/** Region every job touches: the workload's default, which fio is given too. */
const REGION_BYTES = 64 << 20;
/** fio's own bound on one job (its --runtime), seconds. */
const FIO_RUNTIME_SEC = 60;

async function main(args: string[]): Promise<number> {
  const o = parseOrUsage("bench", args, DEFAULTS);
  if (typeof o === "number") return o;
  // Output files are checked before the run, not after it.
  for (const [flag, path] of [["json", o.json], ["svg", o.svg]] as const) {
    if (path === undefined) continue;
    try {
      Deno.writeTextFileSync(path, "");
    } catch (e) {
      console.error(`bench: --${flag}=${path}: cannot write it (${(e as Error).message})`);
      return 2;
    }
  }
  if (o.backend === "real") {
    const why = realBackendUnavailable();
    if (why !== null) {
      console.error(`bench: --backend=real: ${why}`);
      return 1;
    }
  }
  const records: WorkloadRecord[] = [];
  const notRun: string[] = [];
  let fioDir: string | undefined;
  if (o.fio) {
    const why = await fioUnavailable();
    if (why === null) fioDir = await Deno.makeTempDir({ prefix: "premap-fio-" });
    else console.log(`fio: ${why}; running without it`);
  }
  try {
    await runAll(o, records, notRun, fioDir);
  } finally {
    if (fioDir) await Deno.remove(fioDir, { recursive: true });
  }
  const iommus = iommusFor(o);
  console.log(summaryTable(records));
  for (const line of iopsRatioLines(records)) console.log(line);
  const cmp = publishedComparison(records);
  if (cmp) console.log(`\n${cmp}`);
  report(o, records, notRun, iommus);
  if (records.length === 0) {
    console.log("bench: no configuration ran (see the 'not run' lines)");
    return 1;
  }
  return records.every((r) => r.verified) ? 0 : 1;
}

/**
 * The IOMMU modes a run covers: every one asked for, on sim and on real with
 * the emulated namespace (its host stack has the IOMMU); the first only on a
 * real backend without it (a kernel file has no IOMMU model).
 */
function iommusFor(o: RunOptions): IommuMode[] {
  const kernelFile = o.fio === true || realNvmeUnavailable() !== null;
  return o.backend === "real" && kernelFile ? [o.iommu[0]] : o.iommu;
}

/** Run every configuration (and fio beside `none`/`bvec` when `fioDir` is set). */
async function runAll(
  o: RunOptions,
  records: WorkloadRecord[],
  notRun: string[],
  fioDir: string | undefined,
): Promise<void> {
  const iommus = iommusFor(o);
  for (const premap of o.premap ?? ["v2" as const]) {
    for (const iommu of iommus) {
      // With --fio our ring runs on a kernel file as fio does, so deno/fio compares like with like.
      using tb = openTestbed({
        backend: o.backend,
        seed: o.seed,
        iommu,
        premap,
        mediaInMemory: o.media === "memory",
        nvme: !o.fio,
        dmaDebug: o.dmaDebug,
      });
      warmUp(tb, o.paths, o.bs, o.qd[0], o.seed);
      for (const rw of o.rw) {
        for (const qd of o.qd) {
          for (const bs of o.bs) {
            for (const path of o.paths) {
              try {
                const cfg = {
                  path,
                  bs,
                  qd,
                  rw,
                  ios: o.ios,
                  submitBatch: o.submitBatch,
                  seed: o.seed,
                  regionBytes: REGION_BYTES,
                  verify: o.verify,
                  premap,
                };
                const r = runWorkload(tb, cfg, iommu);
                if (tb.backend === "real" && !tb.nvmeDevice) r.iommu = "n/a";
                records.push(r);
              } catch (e) {
                if (!(e instanceof WorkloadError)) throw e;
                notRun.push(`${iommu} ${rw} bs=${bs} qd=${qd} ${path}: ${e.message}`);
              }
              if (fioDir === undefined || path === "dma") continue;
              try {
                records.push(
                  await runFio({
                    path,
                    bs,
                    qd,
                    rw,
                    ios: o.ios,
                    regionBytes: REGION_BYTES,
                    filename: `${fioDir}/fio-${path}-${rw}-${bs}-${qd}.dat`,
                    runtimeSec: FIO_RUNTIME_SEC,
                  }),
                );
              } catch (e) {
                if (!(e instanceof WorkloadError)) throw e;
                notRun.push(`fio ${rw} bs=${bs} qd=${qd} ${path}: ${e.message}`);
              }
            }
          }
        }
      }
    }
  }
}

/** Per-I/O tables (sim), the not-run list, and the JSON and SVG files. */
function report(
  o: RunOptions,
  records: WorkloadRecord[],
  notRun: string[],
  iommus: string[],
): void {
  if (records.some((r) => r.perIo !== null)) {
    for (const premap of o.premap ?? ["v2"]) {
      for (const iommu of iommus) {
        for (const qd of o.qd) {
          for (const rw of o.rw) {
            const sel = records.filter((r) =>
              r.premap === premap && r.iommu === iommu && r.qd === qd && r.rw === rw &&
              r.perIo !== null
            );
            if (sel.length === 0) continue;
            console.log(`\nper I/O, premap=${premap} iommu=${iommu} qd=${qd} ${rw}`);
            console.log(perIoTable(sel));
          }
        }
      }
    }
  }
  for (const n of notRun) console.log(`not run: ${n}`);
  if (o.json) {
    Deno.writeTextFileSync(o.json, JSON.stringify({ records, notRun }, null, 2) + "\n");
    console.log(`wrote ${o.json}`);
  }
  if (o.svg) {
    // One chart: the first qd, direction and IOMMU mode of the run, named in the title.
    const [qd, rw, iommu] = [o.qd[0], o.rw[0], records.find((r) => r.backend !== "fio")?.iommu];
    const first = records.filter((r) =>
      r.backend !== "fio" && r.qd === qd && r.rw === rw && r.iommu === iommu
    );
    const what = o.backend === "sim" ? "host CPU ns per I/O (sim)" : "submission latency mean, ns";
    const metric = {
      label: `${what}: ${rw}, qd=${qd}, iommu=${iommu}, ${o.ios} I/Os per bar`,
      get: (r: WorkloadRecord) => o.backend === "sim" ? r.cpuNsPerIo : r.slat.mean,
    };
    Deno.writeTextFileSync(o.svg, barChartSvg(first, metric));
    console.log(`wrote ${o.svg} (${rw}, qd=${qd}, iommu=${iommu})`);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
