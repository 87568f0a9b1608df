/**
 * The main job: a short random write-then-read workload on an NVMe namespace
 * in `none`, `bvec` and `dma` mode at 4k, 16k and 64k, every byte verified,
 * printed as one side-by-side table of per-I/O work and time.
 *
 *   deno task demo                       # sim backend, IOMMU strict
 *   deno task demo -- --iommu=lazy --qd=8
 *   deno task demo -- --backend=real     # live kernel io_uring (none/bvec on an O_DIRECT file)
 *
 * @module
 */

import { openTestbed } from "../mod.ts";
import { parseOrUsage, type RunOptions } from "../bench/cli.ts";
import { runWorkload, WorkloadError, type WorkloadRecord } from "../bench/workload.ts";
import { perIoTable, summaryTable } from "../bench/report.ts";

const DEFAULTS: RunOptions = {
  backend: "sim",
  paths: ["none", "bvec", "dma"],
  bs: [4096, 16384, 65536],
  qd: [4],
  rw: ["randwrite", "randread"],
  iommu: ["strict"],
  ios: 256,
  seed: 1,
};

/** What `dma` skipped compared with `bvec`, computed from the records. */
export function skippedSentence(records: readonly WorkloadRecord[]): string {
  const sizes = [...new Set(records.map((r) => r.bs))].sort((a, b) => a - b);
  const parts: string[] = [];
  for (const bs of sizes) {
    const b = records.find((r) => r.bs === bs && r.path === "bvec");
    const d = records.find((r) => r.bs === bs && r.path === "dma");
    if (!b?.perIo || !d?.perIo) continue;
    const skipped = [
      ["scatterlist entries", "sgEntries"],
      ["dma_map_sg calls", "dmaMapSgCalls"],
      ["IOVA allocations", "iovaAllocs"],
      ["IOMMU PTE writes", "iommuPteWrites"],
      ["IOTLB invalidations", "iotlbInvalidations"],
      ["PRP pool allocations", "prpPoolAllocs"],
    ].filter(([, k]) => b.perIo![k] > d.perIo![k])
      .map(([label, k]) => `${label} ${fmt(b.perIo![k])} -> ${fmt(d.perIo![k])}`);
    if (skipped.length) parts.push(`${bs / 1024}k: ${skipped.join(", ")}`);
  }
  if (parts.length === 0) return "dma skipped nothing that bvec did in this run.";
  return `Per I/O, dma skipped what bvec did every time (bvec -> dma): ${parts.join("; ")}.`;
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function main(args: string[]): number {
  const o = parseOrUsage("demo", args, DEFAULTS);
  if (typeof o === "number") return o;
  let failed = false;
  for (const iommu of o.iommu) {
    using tb = openTestbed({ backend: o.backend, seed: o.seed, iommu });
    const where = tb.nvmeDevice ?? "an O_DIRECT scratch file";
    console.log(
      `premap demo: backend=${tb.backend}` + (tb.backend === "sim" ? ` iommu=${iommu}` : "") +
        ` seed=${o.seed} target=${where} qd=${o.qd.join(",")} ios=${o.ios} per cell`,
    );
    for (const rw of o.rw) {
      const records: WorkloadRecord[] = [];
      for (const qd of o.qd) {
        for (const bs of o.bs) {
          for (const path of o.paths) {
            try {
              records.push(
                runWorkload(
                  tb,
                  { path, bs, qd, rw, ios: o.ios, seed: o.seed, verify: o.verify },
                  iommu,
                ),
              );
            } catch (e) {
              if (!(e instanceof WorkloadError)) throw e;
              console.log(`  ${rw} ${bs / 1024}k ${path}: not run: ${e.message}`);
            }
          }
        }
      }
      console.log(
        `\n${rw}: every completion full-length and every byte read verified: ${
          records.every((r) => r.verified) ? "yes" : "NO"
        }`,
      );
      if (records.some((r) => !r.verified)) failed = true;
      if (tb.backend === "sim") console.log(perIoTable(records));
      else console.log(summaryTable(records));
      if (tb.backend === "sim") console.log(skippedSentence(records));
    }
    console.log("");
  }
  if (o.backend === "sim") {
    console.log(
      "Counts are exact for the simulated kernel path; times are wall-clock ns of the TypeScript\n" +
        "model on this machine, comparable only as ratios within one run.",
    );
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
