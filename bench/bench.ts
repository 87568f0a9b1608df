/**
 * The none/bvec/dma benchmark: one record per configuration, as a table,
 * JSON (`--json`) and an SVG chart of per-I/O host time (`--svg`).
 *
 *   deno task bench -- --backend=sim --path=none,bvec,dma --bs=4k,16k,64k --qd=1,16 \
 *       --rw=randread --iommu=strict --ios=2000 --json=out.json --svg=out.svg
 *
 * @module
 */

import { openTestbed } from "../mod.ts";
import { parseOrUsage, type RunOptions } from "./cli.ts";
import { runWorkload, WorkloadError, type WorkloadRecord } from "./workload.ts";
import { barChartSvg, perIoTable, summaryTable } from "./report.ts";

const DEFAULTS: RunOptions = {
  backend: "sim",
  paths: ["none", "bvec", "dma"],
  bs: [4096, 16384, 65536],
  qd: [1, 16],
  rw: ["randread"],
  iommu: ["strict"],
  ios: 2000,
  seed: 1,
};

function main(args: string[]): number {
  const o = parseOrUsage("bench", args, DEFAULTS);
  if (typeof o === "number") return o;
  const records: WorkloadRecord[] = [];
  const notRun: string[] = [];
  const iommus = o.backend === "real" ? [o.iommu[0]] : o.iommu;
  for (const iommu of iommus) {
    using tb = openTestbed({ backend: o.backend, seed: o.seed, iommu });
    for (const rw of o.rw) {
      for (const qd of o.qd) {
        for (const bs of o.bs) {
          for (const path of o.paths) {
            try {
              const r = runWorkload(tb, { path, bs, qd, rw, ios: o.ios, seed: o.seed }, iommu);
              if (tb.backend === "real") r.iommu = "n/a";
              records.push(r);
            } catch (e) {
              if (!(e instanceof WorkloadError)) throw e;
              notRun.push(`${iommu} ${rw} bs=${bs} qd=${qd} ${path}: ${e.message}`);
            }
          }
        }
      }
    }
  }
  console.log(summaryTable(records));
  if (o.backend === "sim") {
    for (const iommu of iommus) {
      for (const qd of o.qd) {
        for (const rw of o.rw) {
          const sel = records.filter((r) => r.iommu === iommu && r.qd === qd && r.rw === rw);
          if (sel.length === 0) continue;
          console.log(`\nper I/O, iommu=${iommu} qd=${qd} ${rw}`);
          console.log(perIoTable(sel));
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
    const first = records.filter((r) => r.qd === o.qd[0] && r.iommu === records[0]?.iommu);
    const metric = o.backend === "sim"
      ? { label: "host CPU ns per I/O (sim)", get: (r: WorkloadRecord) => r.cpuNsPerIo }
      : { label: "submission latency mean, ns", get: (r: WorkloadRecord) => r.slat.mean };
    Deno.writeTextFileSync(o.svg, barChartSvg(first, metric));
    console.log(`wrote ${o.svg}`);
  }
  return records.every((r) => r.verified) ? 0 : 1;
}

if (import.meta.main) Deno.exit(main(Deno.args));
