/**
 * The main job: a short random write-then-read workload on an NVMe namespace
 * in `none`, `bvec` and `dma` mode at 4k, 16k and 64k, every byte verified,
 * printed as one side-by-side table of per-I/O work and time.
 *
 *   deno task demo                       # sim backend, IOMMU lazy
 *   deno task demo -- --iommu=lazy --qd=8
 *   deno task demo -- --backend=real     # live kernel io_uring + the C controller
 *
 * @module
 */

import { runMain } from "../bench/main.ts";
import { openTestbed, realBackendUnavailable } from "../mod.ts";
import { parseOrUsage, type RunOptions, workloadConfig } from "../bench/cli.ts";
import { runWorkload, warmUp, WorkloadError, type WorkloadRecord } from "../bench/workload.ts";
import { PER_IO_ROWS, perIoTable, summaryTable } from "../bench/report.ts";
import type { IommuMode } from "../sim/dma/types.ts";
import { sizeLabel } from "../bench/size.ts";

const DEFAULTS: RunOptions = {
  backend: "sim",
  paths: ["none", "bvec", "dma"],
  bs: [4096, 16384, 65536],
  qd: [4],
  rw: ["randwrite", "randread"],
  // Lazy: the published runs' most likely mode (x86's default domain type since 5.15).
  iommu: ["lazy"],
  ios: 256,
  seed: 1,
};

/**
 * What `dma` skipped compared with `bvec`: every count row of the per-I/O
 * table where bvec did more, computed from the records.
 */
export function skippedSentence(records: readonly WorkloadRecord[]): string {
  const sizes = [...new Set(records.map((r) => r.bs))].sort((a, b) => a - b);
  const parts: string[] = [];
  for (const bs of sizes) {
    const b = records.find((r) => r.bs === bs && r.path === "bvec");
    const d = records.find((r) => r.bs === bs && r.path === "dma");
    if (!b?.perIo || !d?.perIo) continue;
    const skipped = PER_IO_ROWS.filter((row) => row.count)
      .map((row) => ({ label: row.label.trim(), b: row.get(b)!, d: row.get(d)! }))
      .filter((x) => x.b > x.d)
      .map((x) => `${x.label} ${fmt(x.b)} -> ${fmt(x.d)}`);
    if (skipped.length) parts.push(`${sizeLabel(bs)}: ${skipped.join(", ")}`);
  }
  if (parts.length === 0) return "";
  return `Per I/O, dma skipped what bvec did (bvec -> dma): ${parts.join("; ")}.`;
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/0+$/, "");
}

function main(args: string[]): number {
  const o = parseOrUsage("demo", args, DEFAULTS);
  if (typeof o === "number") return o;
  if (o.backend === "real") {
    const why = realBackendUnavailable();
    if (why !== null) {
      console.error(`demo: --backend=real: ${why}`);
      return 1;
    }
  }
  let failed = false;
  for (const premap of o.premap ?? ["v2" as const]) {
    for (const iommu of o.iommu) {
      using tb = openTestbed({
        backend: o.backend,
        seed: o.seed,
        iommu: iommu as IommuMode,
        premap,
        mediaInMemory: o.media === "memory",
        dmaDebug: o.dmaDebug,
        timing: o.stageTiming,
      });
      const where = tb.nvmeDevice ?? "an O_DIRECT scratch file";
      const how = tb.backend === "sim"
        ? ""
        : tb.nvmeDevice
        ? ` (live kernel io_uring; TypeScript host stack; C controller on its own thread; media in ${
          o.media === "memory" ? "memory" : "a file"
        })`
        : " (live kernel io_uring; the C controller is not built: no emulated namespace)";
      console.log(
        `premap demo: backend=${tb.backend} premap=${premap} iommu=${iommu}${how}` +
          ` seed=${o.seed} target=${where} ios=${o.ios} per cell`,
      );
      warmUp(tb, o.paths, o.bs, o.qd[0], o.seed);
      for (const qd of o.qd) {
        for (const rw of o.rw) {
          const records: WorkloadRecord[] = [];
          for (const bs of o.bs) {
            for (const path of o.paths) {
              try {
                const cfg = workloadConfig(o, { path, bs, qd, rw, premap });
                records.push(runWorkload(tb, cfg, iommu));
              } catch (e) {
                if (!(e instanceof WorkloadError)) throw e;
                console.log(`  ${rw} qd=${qd} ${sizeLabel(bs)} ${path}: not run: ${e.message}`);
              }
            }
          }
          const ok = records.every((r) => r.verified);
          const what = o.verify === false
            ? "every completion full-length (bytes not checked: --verify=0)"
            : "every completion full-length and every byte read verified";
          console.log(`\n${rw} qd=${qd}: ${what}: ${ok ? "yes" : "NO"}`);
          if (!ok && premap !== "hardened") {
            console.log(
              `  (${premap} is the posted code: under bounce buffering its sync loops miss pages, ` +
                `and its PRP copy reads uninitialised state; README "The three variants". ` +
                `--premap=hardened verifies.)`,
            );
          }
          if (!ok) failed = true;
          if (records.length === 0) continue;
          if (tb.stats) {
            console.log(perIoTable(records));
            const sentence = skippedSentence(records);
            if (sentence) console.log(sentence);
          } else console.log(summaryTable(records));
        }
      }
      console.log("");
    }
  }
  console.log(
    "Counts are exact for the simulated kernel path; times are wall-clock ns of the TypeScript\n" +
      "host stack on this machine" +
      (o.backend === "real" ? ",\nplus the C device thread and the cross-thread handshakes" : "") +
      ", comparable only as ratios within one run.",
  );
  return failed ? 1 : 0;
}

if (import.meta.main) await runMain("demo", () => main(Deno.args));
