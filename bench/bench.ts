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

import { runMain } from "./main.ts";
import { openTestbed, realBackendUnavailable } from "../mod.ts";
import {
  checkOutput,
  DEFAULT_REGION_BYTES,
  defaultRampIos,
  parseOrUsage,
  resolveOutput,
  type RunOptions,
  workloadConfig,
} from "./cli.ts";
import { runWorkload, warmUp, WorkloadError, type WorkloadRecord } from "./workload.ts";
import { htmlReport, renderSvg, reportSpec } from "./charts.ts";
import { combineRepeats } from "./repeat.ts";
import { Progress } from "./progress.ts";
import { attachLoop, type LoopDevice, loopUnavailable } from "./loopdev.ts";
import { sizeLabel } from "./size.ts";
import type { PremapVariant } from "../sim/kernel.ts";
import { iopsRatioLines, perIoTable, publishedComparison, summaryTable } from "./report.ts";
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

/** fio's own bound on one job (its --runtime), seconds. */
const FIO_RUNTIME_SEC = 60;

async function main(args: string[]): Promise<number> {
  const o = parseOrUsage("bench", args, DEFAULTS);
  if (typeof o === "number") return o;
  // Output files are resolved against where the user ran the task and checked before the run.
  for (const flag of ["json", "svg", "html"] as const) {
    const path = o[flag];
    if (path === undefined) continue;
    o[flag] = resolveOutput(path);
    const why = checkOutput(flag, o[flag]!);
    if (why !== null) {
      console.error(`bench: ${why}`);
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
  let withFio = false;
  let live: LoopDevice | undefined;
  if (o.fio) {
    const why = await fioUnavailable();
    if (why === null) withFio = true;
    else console.log(`fio: ${why}; running without it`);
    // Equal work by default: fio checks no bytes here, so neither do we unless asked.
    if (o.verify === undefined) o.verify = false;
    if (withFio) {
      console.log(
        o.verify
          ? "work: NOT equal: our ring checks every byte it reads (--verify=1), fio checks none"
          : "work: equal: neither our ring nor fio checks the bytes it reads (--verify=0)",
      );
    }
    live = await liveTarget(o.sizeBytes ?? DEFAULT_REGION_BYTES);
  }
  const ramp = defaultRampIos(o);
  if (ramp > 0) {
    console.log(
      `ramp: each configuration first runs ${ramp} unmeasured I/Os on its job (--ramp)`,
    );
  }
  try {
    await runAll(o, records, notRun, withFio, live?.path);
  } finally {
    live?.release();
  }
  await report(o, records, notRun, iommusFor(o));
  if (records.length === 0) {
    console.log("bench: no configuration ran (see the 'not run' lines)");
    return 1;
  }
  return records.every((r) => r.verified) ? 0 : 1;
}

/**
 * The live reference's target: a loop device with direct I/O over a sparse
 * file, so our ring and fio go through the kernel's bio and blk-mq; without
 * root or losetup, an O_DIRECT scratch file (undefined), and it says which.
 */
async function liveTarget(sizeBytes: number): Promise<LoopDevice | undefined> {
  const why = await loopUnavailable();
  if (why === null) {
    const dir = Deno.makeTempDirSync({ prefix: "premap-loop-" });
    try {
      const dev = await attachLoop(dir, sizeBytes);
      console.log(
        `live reference: ${dev.path}, a loop device (direct I/O) over a ${
          sizeLabel(sizeBytes)
        } file, laid out: the kernel's bio and blk-mq under our ring and fio alike`,
      );
      return dev;
    } catch (e) {
      console.log(`live reference: an O_DIRECT scratch file (${(e as Error).message})`);
      return undefined;
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
  console.log(`live reference: an O_DIRECT scratch file, not a loop device: ${why}`);
  return undefined;
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

/** Run every configuration (and fio beside `none`/`bvec` when `withFio`). */
async function runAll(
  o: RunOptions,
  records: WorkloadRecord[],
  notRun: string[],
  withFio: boolean,
  target: string | undefined,
): Promise<void> {
  const iommus = iommusFor(o);
  const premaps = o.premap ?? ["v2" as const];
  const fioPaths = withFio ? o.paths.filter((p) => p !== "dma").length : 0;
  const steps = premaps.length * iommus.length * o.rw.length * o.qd.length * o.bs.length *
    (o.paths.length + fioPaths) * (o.repeat ?? 1);
  const progress = new Progress(steps);
  try {
    await runConfigs(o, records, notRun, withFio, target, iommus, premaps, progress);
  } finally {
    progress.end();
  }
}

/** The loops of {@link runAll}. */
async function runConfigs(
  o: RunOptions,
  records: WorkloadRecord[],
  notRun: string[],
  withFio: boolean,
  target: string | undefined,
  iommus: IommuMode[],
  premaps: PremapVariant[],
  progress: Progress,
): Promise<void> {
  for (const premap of premaps) {
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
        timing: o.stageTiming,
      });
      warmUp(tb, o.paths, o.bs, o.qd[0], o.seed);
      for (const rw of o.rw) {
        for (const qd of o.qd) {
          for (const bs of o.bs) {
            for (const path of o.paths) {
              try {
                const cfg = {
                  ...workloadConfig(o, { path, bs, qd, rw, premap }),
                  rampIos: defaultRampIos(o),
                  target,
                };
                const runs: WorkloadRecord[] = [];
                for (let i = 0; i < (o.repeat ?? 1); i++) {
                  progress.start(`${sizeLabel(bs)} qd=${qd} ${path} ${iommu} ${rw}`);
                  const r = runWorkload(tb, cfg, iommu);
                  progress.step();
                  if (tb.backend === "real" && !tb.nvmeDevice) r.iommu = "n/a";
                  runs.push(r);
                }
                records.push(runs.length > 1 ? combineRepeats(runs) : runs[0]);
              } catch (e) {
                if (!(e instanceof WorkloadError)) throw e;
                notRun.push(`${iommu} ${rw} bs=${bs} qd=${qd} ${path}: ${e.message}`);
              }
              if (!withFio || path === "dma") continue;
              // fio's file lives in a directory made for this run alone and removed after it.
              const fioDir = await Deno.makeTempDir({ prefix: "premap-fio-" });
              // While fio runs the event loop is free, so Ctrl-C can remove fio's files at once
              // (during our own synchronous jobs no listener is set: Ctrl-C ends the process).
              const onInt = () => {
                Deno.removeSync(fioDir, { recursive: true });
                console.error("bench: interrupted; fio's scratch files removed");
                Deno.exit(130);
              };
              Deno.addSignalListener("SIGINT", onInt);
              try {
                const runs: WorkloadRecord[] = [];
                for (let i = 0; i < (o.repeat ?? 1); i++) {
                  progress.start(`fio ${sizeLabel(bs)} qd=${qd} ${path} ${rw}`);
                  runs.push(
                    await runFio({
                      path,
                      bs,
                      qd,
                      rw,
                      ios: o.ios,
                      regionBytes: o.sizeBytes ?? DEFAULT_REGION_BYTES,
                      filename: target ?? `${fioDir}/fio-${path}-${rw}-${bs}-${qd}.dat`,
                      device: target !== undefined,
                      runtimeSec: FIO_RUNTIME_SEC,
                    }),
                  );
                  progress.step();
                }
                records.push(runs.length > 1 ? combineRepeats(runs) : runs[0]);
              } catch (e) {
                if (!(e instanceof WorkloadError)) throw e;
                notRun.push(`fio ${rw} bs=${bs} qd=${qd} ${path}: ${e.message}`);
              } finally {
                Deno.removeSignalListener("SIGINT", onInt);
                await Deno.remove(fioDir, { recursive: true });
              }
            }
          }
        }
      }
    }
  }
}

/** A titled block of the report: printed, and a section of the HTML page. */
interface Section {
  heading: string;
  text: string;
}

/** The report's text blocks: summary, published comparison, per-I/O tables, what did not run. */
function sections(
  o: RunOptions,
  records: WorkloadRecord[],
  notRun: string[],
  iommus: string[],
): Section[] {
  const out: Section[] = [{
    heading: "records",
    text: [summaryTable(records), ...iopsRatioLines(records)].join("\n"),
  }];
  const exp = exposureTable(records);
  if (exp) out.push({ heading: "DMA exposure", text: exp });
  const cmp = publishedComparison(records);
  if (cmp) out.push({ heading: "published against the kernel cost model", text: cmp });
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
            out.push({
              heading: `per I/O, premap=${premap} iommu=${iommu} qd=${qd} ${rw}`,
              text: perIoTable(sel),
            });
          }
        }
      }
    }
  }
  if (notRun.length) {
    out.push({
      heading: "not run",
      text: notRun.map((n) => `not run: ${n}`).join("\n"),
    });
  }
  return out;
}

/** Print the report, then write the JSON, the SVG charts and the HTML page asked for. */
async function report(
  o: RunOptions,
  records: WorkloadRecord[],
  notRun: string[],
  iommus: string[],
): Promise<void> {
  const secs = sections(o, records, notRun, iommus);
  secs.forEach((sec, i) => {
    if (i > 0 && sec.heading !== "not run") console.log("");
    if (sec.heading.startsWith("per I/O")) console.log(sec.heading);
    console.log(sec.text);
  });
  if (o.json) {
    Deno.writeTextFileSync(o.json, JSON.stringify({ records, notRun }, null, 2) + "\n");
    console.log(`wrote ${o.json}`);
  }
  if (!o.svg && !o.html) return;
  const shown = records.filter((r) =>
    r.backend !== "fio" || records.every((x) => x.backend === "fio")
  );
  const svg = await renderSvg(reportSpec(shown.length ? shown : records));
  if (o.svg) {
    Deno.writeTextFileSync(o.svg, svg);
    console.log(`wrote ${o.svg} (${records.length} records)`);
  }
  if (o.html) {
    const title =
      `premap bench: ${o.backend}, ${records.length} configurations, ${o.ios} I/Os each`;
    Deno.writeTextFileSync(o.html, htmlReport(title, svg, secs));
    console.log(`wrote ${o.html}`);
  }
}

if (import.meta.main) await runMain("bench", () => main(Deno.args));

/**
 * DMA exposure per configuration: bytes mapped for the device but not in use
 * by an in-flight I/O, averaged over the run's wall time (what premapping
 * trades for its saving: its buffers stay mapped between I/Os).
 */
export function exposureTable(records: readonly WorkloadRecord[]): string | null {
  const rows = records.filter((r) => r.exposure);
  if (rows.length === 0) return null;
  const head = ["premap", "iommu", "rw", "qd", "bs", "path", "idle mapped (mean B)", "MiB x s"];
  const cells = rows.map((r) => [
    r.premap,
    r.iommu,
    r.rw,
    String(r.qd),
    `${r.bs / 1024}k`,
    r.path,
    r.exposure!.idleMappedBytesMean.toLocaleString("en-US"),
    r.exposure!.idleMappedMiBSeconds.toFixed(3),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(w[i])).join(" | ").trimEnd();
  return [
    "DMA exposure: bytes mapped for the device but idle (not under an in-flight I/O), over the run:",
    line(head),
    w.map((n) => "-".repeat(n)).join("-|-"),
    ...cells.map(line),
  ].join("\n");
}
