/**
 * Text and SVG reports of workload records: the side-by-side per-I/O table
 * the demo prints, and the benchmark's table and chart.
 *
 * @module
 */

import { type IoPath, P999_MIN_SAMPLES, type WorkloadRecord } from "./workload.ts";
import { iopsVersusOthers, type Spread } from "./repeat.ts";
import { countDifference } from "./cost_model.ts";
import { PUBLISHED, publishedCpuNs } from "./published.ts";
import { sizeLabel } from "./size.ts";

/** Rows of the per-I/O table: a label and how to read it from a record. */
export const PER_IO_ROWS: readonly {
  label: string;
  get: (r: WorkloadRecord) => number | null;
  /** A count of work done (as opposed to a time). */
  count?: boolean;
}[] = [
  { label: "pages pinned", count: true, get: (r) => r.perIo?.pagesPinned ?? null },
  { label: "bio_vecs built", count: true, get: (r) => r.perIo?.bioVecs ?? null },
  { label: "scatterlist entries", count: true, get: (r) => r.perIo?.sgEntries ?? null },
  { label: "dma_map_sg calls", count: true, get: (r) => r.perIo?.dmaMapSgCalls ?? null },
  {
    label: "dma map/unmap page",
    count: true,
    get: (r) => r.perIo ? r.perIo.dmaMapPageCalls + r.perIo.dmaUnmapPageCalls : null,
  },
  { label: "IOVA allocations", count: true, get: (r) => r.perIo?.iovaAllocs ?? null },
  {
    label: "IOMMU PTE writes+clears",
    count: true,
    get: (r) => r.perIo ? r.perIo.iommuPteWrites + r.perIo.iommuPteClears : null,
  },
  { label: "IOTLB invalidations", count: true, get: (r) => r.perIo?.iotlbInvalidations ?? null },
  { label: "IOTLB global flushes", count: true, get: (r) => r.perIo?.iotlbFlushes ?? null },
  { label: "bytes bounced (swiotlb)", count: true, get: (r) => r.perIo?.bounceBytes ?? null },
  { label: "PRP entries written", count: true, get: (r) => r.perIo?.prpEntries ?? null },
  { label: "SGL descriptors", count: true, get: (r) => r.perIo?.sglDescriptors ?? null },
  { label: "PRP pool allocations", count: true, get: (r) => r.perIo?.prpPoolAllocs ?? null },
  {
    label: "iod_mempool allocations",
    count: true,
    get: (r) => r.perIo?.iodMempoolAllocs ?? null,
  },
  { label: "bytes allocated", count: true, get: (r) => r.perIo?.bytesAllocated ?? null },
  { label: "DMA-API debug reports", count: true, get: (r) => r.perIo?.dmaDebugErrors ?? null },
  { label: "kernel slat, model ns", get: (r) => r.model?.slat_ns ?? null },
  { label: "kernel CPU/IO, model ns", get: (r) => r.model?.cpu_ns ?? null },
  { label: "host ns per I/O (wall)", get: (r) => r.cpuNsPerIo },
  { label: "  of which dma_map", get: (r) => r.stageNsPerIo?.dma_map ?? null },
  { label: "  of which nvme_prep", get: (r) => r.stageNsPerIo?.nvme_prep ?? null },
  { label: "slat mean ns (wall)", get: (r) => r.slat.mean },
];

function fmt(v: number | null): string {
  if (v === null || Number.isNaN(v)) return "-";
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString("en-US");
  if (Number.isInteger(v)) return String(v);
  // Per-I/O averages: keep enough digits that 1.004 (a pool page allocated once) is not "1.00".
  return v.toFixed(3).replace(/0+$/, "");
}

/**
 * One table: rows are per-I/O costs, columns are (bs, path) pairs, grouped
 * by block size, for records of one direction.
 */
export function perIoTable(records: readonly WorkloadRecord[]): string {
  const sizes = [...new Set(records.map((r) => r.bs))].sort((a, b) => a - b);
  const paths: IoPath[] = ["none", "bvec", "dma"];
  const cols: (WorkloadRecord | undefined)[] = [];
  const heads: string[] = [];
  for (const bs of sizes) {
    for (const p of paths) {
      cols.push(records.find((r) => r.bs === bs && r.path === p));
      heads.push(`${sizeLabel(bs)} ${p}`);
    }
  }
  const labelW = Math.max(...PER_IO_ROWS.map((r) => r.label.length), 10);
  const cells = PER_IO_ROWS.map((row) => cols.map((c) => (c ? fmt(row.get(c)) : "n/a")));
  const colW = heads.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (label: string, xs: string[]) =>
    label.padEnd(labelW) + " | " + xs.map((x, i) => x.padStart(colW[i])).join("  ");
  const out = [
    line("per I/O", heads),
    "-".repeat(labelW + 3 + colW.reduce((a, b) => a + b + 2, -2)),
  ];
  PER_IO_ROWS.forEach((row, i) => out.push(line(row.label, cells[i])));
  return out.join("\n");
}

/** `median [min-max]` with repeats, else the value. */
function withSpread(v: number | null, sp: Spread | null | undefined): string {
  if (!sp) return fmt(v);
  return `${fmt(sp.median)} [${fmt(sp.min)}-${fmt(sp.max)}]`;
}

/**
 * One line per record: the benchmark's summary table. With `--repeat`, each
 * measured figure is `median [min-max]` over the runs, and the last column
 * compares IOPS with the configuration's other paths (`n.s.` where their
 * ranges overlap).
 */
export function summaryTable(records: readonly WorkloadRecord[]): string {
  const repeated = records.some((r) => r.spread);
  const head = [
    "backend",
    "premap",
    "iommu",
    "rw",
    "bs",
    "qd",
    "path",
    "ios",
    repeated ? `IOPS (median [min-max] of ${records[0].spread?.runs ?? 1})` : "IOPS",
    "slat mean",
    "slat p99",
    "clat p50",
    "clat p99",
    "clat p99.9",
    "cpu ns/io",
    "model slat",
    "model cpu",
    "ok",
    ...(repeated ? ["IOPS vs other paths"] : []),
  ];
  const rows = records.map((r) => [
    r.backend,
    r.premap ?? "v2",
    r.iommu,
    r.rw,
    sizeLabel(r.bs),
    String(r.qd),
    r.path,
    String(r.ios),
    withSpread(r.iops, r.spread?.iops),
    withSpread(r.slat.mean, r.spread?.slatMean),
    fmt(r.slat.p99),
    withSpread(r.clat.p50, r.spread?.clatP50),
    withSpread(r.clat.p99, r.spread?.clatP99),
    r.clat.p999 === null ? `-` : fmt(r.clat.p999),
    withSpread(r.cpuNsPerIo, r.spread?.cpuNsPerIo),
    fmt(r.model?.slat_ns ?? null),
    fmt(r.model?.cpu_ns ?? null),
    r.verified ? "yes" : "NO",
    ...(repeated ? [iopsVersusOthers(r, records)] : []),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (xs: string[]) =>
    xs.map((x, i) => i === xs.length - 1 && repeated ? x : x.padStart(w[i])).join("  ");
  const notes = [];
  if (records.some((r) => r.clat.p999 === null)) {
    notes.push(
      `clat p99.9: '-' where fewer than ${
        P999_MIN_SAMPLES.toLocaleString("en-US")
      } I/Os stand behind it`,
    );
  }
  if (repeated) {
    notes.push("n.s.: the two paths' IOPS ranges over the repeats overlap (not significant)");
  }
  return [line(head), ...rows.map(line), ...notes].join("\n");
}

/**
 * One line per configuration that has both a `num` and a `den` record (same
 * rw, bs, qd and path): `num/den IOPS` and both IOPS, e.g. our ring on the
 * live kernel (`backend: "real"`, shown as "deno") against fio.
 */
export function iopsRatioLines(
  records: readonly WorkloadRecord[],
  num = "real",
  den = "fio",
  label = "deno/fio IOPS",
): string[] {
  const out: string[] = [];
  for (const a of records) {
    if (a.backend !== num) continue;
    const b = records.find((r) =>
      r.backend === den && r.rw === a.rw && r.bs === a.bs && r.qd === a.qd && r.path === a.path
    );
    if (!b || !(b.iops > 0)) continue;
    out.push(
      `${label} ${a.rw} bs=${sizeLabel(a.bs)} qd=${a.qd} ${a.path}: ${
        (a.iops / b.iops).toFixed(2)
      } (${fmt(a.iops)} / ${fmt(b.iops)})`,
    );
  }
  return out;
}

/** Short names for the counts behind a modelled difference. */
const SHORT: Record<string, string> = {
  enterCalls: "enter",
  sqesConsumed: "sqe",
  cqesPosted: "cqe",
  pagesPinned: "pin",
  pagesUnpinned: "unpin",
  bioVecs: "bvec",
  sgEntries: "sg",
  dmaMapSgCalls: "map_sg",
  dmaUnmapSgCalls: "unmap_sg",
  dmaMapPageCalls: "map_page",
  dmaUnmapPageCalls: "unmap_page",
  iovaAllocs: "iova",
  iovaFrees: "iova_free",
  iommuPteWrites: "pte",
  iommuPteClears: "pte_clear",
  iotlbInvalidations: "inval",
  iotlbFlushes: "flush",
  prpEntries: "prp",
  prpPoolAllocs: "pool",
  prpPoolFrees: "pool_free",
  bytesAllocated: "bytes",
};

/**
 * The counts behind the modelled submission-side difference between a record
 * and the `dma` record of the same size: `pin 16 (2670)` is 16 more pages
 * pinned per I/O, 2670 modelled ns.
 */
export function differenceFromDma(r: WorkloadRecord, dma: WorkloadRecord | undefined): string {
  if (!r.perIoBySide || !dma?.perIoBySide || r === dma) return "";
  return countDifference(r.perIoBySide, dma.perIoBySide)
    .filter((d) => d.side === "submission" && Math.abs(d.ns) >= 1)
    .map((d) => `${SHORT[d.event] ?? d.event} ${fmt(d.delta)} (${Math.round(d.ns)})`)
    .join(", ");
}

/**
 * Published against modelled, per published cell the run measured: published
 * slat, modelled slat under the first IOMMU mode of `modes` (lazy by default,
 * the published runs' most likely mode), their ratio, the same for CPU per
 * I/O (published: sys% / IOPS), the other modes' modelled slat and CPU beside
 * it, and the counts behind each path's difference from `dma`.
 */
export function publishedComparison(
  records: readonly WorkloadRecord[],
  modes: readonly string[] = ["lazy", "strict"],
): string {
  const sel = records.filter((r) => r.model && r.rw === "randread" && r.backend !== "fio");
  const present = modes.filter((m) => sel.some((r) => r.iommu === m));
  if (present.length === 0) return "";
  const [main, ...beside] = present;
  const head = [
    "qd",
    "bs",
    "path",
    "pub slat",
    `model slat (${main})`,
    "ratio",
    ...beside.map((m) => `model slat (${m})`),
    "pub cpu",
    `model cpu (${main})`,
    "ratio",
    ...beside.map((m) => `model cpu (${m})`),
    `submission counts behind the difference from dma (${main}; per I/O, modelled ns)`,
  ];
  const rows: string[][] = [];
  for (const c of PUBLISHED) {
    const find = (m: string, path = c.path) =>
      sel.find((r) => r.iommu === m && r.qd === c.qd && r.bs === c.bs && r.path === path);
    const r = find(main);
    if (!r) continue;
    const pubCpu = publishedCpuNs(c);
    rows.push([
      String(c.qd),
      sizeLabel(c.bs),
      c.path,
      fmt(c.slatNs),
      fmt(r.model!.slat_ns),
      (r.model!.slat_ns / c.slatNs).toFixed(2),
      ...beside.map((m) => fmt(find(m)?.model?.slat_ns ?? null)),
      fmt(pubCpu),
      fmt(r.model!.cpu_ns),
      (r.model!.cpu_ns / pubCpu).toFixed(2),
      ...beside.map((m) => fmt(find(m)?.model?.cpu_ns ?? null)),
      differenceFromDma(r, find(main, "dma")),
    ]);
  }
  if (rows.length === 0) return "";
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const last = head.length - 1;
  const line = (xs: string[]) =>
    xs.map((x, i) => i === last ? x : i < 3 ? x.padEnd(w[i]) : x.padStart(w[i])).join("  ");
  return [
    `published (Busch, PATCHv3 thread, fio, intel_iommu=on) against the kernel cost model ` +
    `(bench/kernel_costs.json) applied to each record's counts; randread, premap ${sel[0].premap}`,
    line(head),
    ...rows.map(line),
  ].join("\n");
}
