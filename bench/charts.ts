/**
 * The benchmark's charts, as vega-lite specifications rendered to SVG by vega
 * headlessly (no canvas, no browser), and the self-contained HTML report.
 *
 * - modelled kernel slat and CPU per I/O against block size, one line per
 *   path, one panel per queue depth, the published values as reference points;
 * - IOPS, and per-I/O IOMMU work, against IOMMU mode;
 * - the modelled kernel cost per I/O by stage, stacked, per path.
 *
 * Every record a run measured appears (a line per path and IOMMU mode, and
 * per direction and variant when a run has more than one).
 *
 * @module
 */

import * as vega from "vega";
import * as vl from "vega-lite";
import type { WorkloadRecord } from "./workload.ts";
import { modelTerms } from "./cost_model.ts";
import { PUBLISHED, publishedCpuNs } from "./published.ts";
import { sizeLabel } from "./size.ts";

type Spec = Record<string, unknown>;

const PATH_COLORS = { domain: ["none", "bvec", "dma"], range: ["#7f7f7f", "#1f77b4", "#d62728"] };

/** Which stage of the modelled kernel path each priced event belongs to (completion: its side). */
export const EVENT_STAGE: Record<string, string> = {
  enterCalls: "syscall",
  sqesConsumed: "io_uring",
  cqesPosted: "io_uring",
  iovIters: "iov_iter",
  pagesPinned: "iov_iter (pin)",
  pagesUnpinned: "iov_iter (pin)",
  bios: "bio",
  bioVecs: "bio",
  bioSplits: "bio",
  bioAllocs: "bio",
  bvecAllocs: "bio",
  bioMerges: "blk_mq",
  requests: "blk_mq",
  requestsRequeued: "blk_mq",
  sgEntries: "dma_map",
  dmaMapSgCalls: "dma_map",
  dmaUnmapSgCalls: "dma_map",
  dmaMapPageCalls: "dma_map",
  dmaUnmapPageCalls: "dma_map",
  dmaSyncs: "dma_map",
  bounceBytes: "dma_map",
  iovaAllocs: "iommu",
  iovaFrees: "iommu",
  iommuPteWrites: "iommu",
  iommuPteClears: "iommu",
  iotlbInvalidations: "iommu",
  iotlbFlushes: "iommu",
  nvmeCommands: "nvme_prep",
  prpEntries: "nvme_prep",
  prpPoolAllocs: "nvme_prep",
  prpPoolFrees: "nvme_prep",
  sglDescriptors: "nvme_prep",
  iodMempoolAllocs: "nvme_prep",
};

const DOC_CONFIG = {
  background: "white",
  font: "sans-serif",
  axis: { labelFontSize: 12, titleFontSize: 13 },
  legend: { labelFontSize: 12, titleFontSize: 13 },
  header: { labelFontSize: 13, titleFontSize: 13 },
  title: { fontSize: 15, anchor: "start" },
};

/** What else than path, bs, qd and IOMMU mode tells records apart in this run (rw, variant). */
function variantOf(records: readonly WorkloadRecord[]): (r: WorkloadRecord) => string {
  const rws = new Set(records.map((r) => r.rw));
  const premaps = new Set(records.map((r) => r.premap));
  const backends = new Set(records.map((r) => r.backend));
  return (r) =>
    [
      backends.size > 1 ? r.backend : "",
      rws.size > 1 ? r.rw : "",
      premaps.size > 1 ? r.premap : "",
    ].filter((x) => x).join(" ");
}

/** Panel names in (bs, qd, iommu) order, as they appear in `values`. */
function panelOrder(values: readonly Spec[], records: readonly WorkloadRecord[]): string[] {
  const key = (r: WorkloadRecord) => r.bs * 1e6 + r.qd * 10 + IOMMU_ORDER.indexOf(r.iommu);
  const byPanel = new Map<string, number>();
  values.forEach((v, i) => {
    const k = key(records[v.rec as number] ?? records[i]);
    const p = v.panel as string;
    if (!byPanel.has(p) || k < byPanel.get(p)!) byPanel.set(p, k);
  });
  return [...byPanel.entries()].sort((a, b) => a[1] - b[1]).map(([p]) => p);
}

const IOMMU_ORDER = ["off", "passthrough", "lazy", "strict", "bounce", "n/a"];

/** Modelled slat and CPU against block size, per path; panels by queue depth; published points. */
export function modelLinesSpec(records: readonly WorkloadRecord[], metric: "slat" | "cpu"): Spec {
  const variant = variantOf(records);
  const sel = records.filter((r) => r.model);
  const sizes = [...new Set(sel.map((r) => r.bs))].sort((a, b) => a - b);
  const qds = [...new Set(sel.map((r) => r.qd))].sort((a, b) => a - b);
  const values: Spec[] = sel.map((r) => ({
    bs: sizeLabel(r.bs),
    bsBytes: r.bs,
    qd: `QD${r.qd}`,
    path: r.path,
    line: [r.iommu, variant(r)].filter((x) => x).join(" "),
    ns: metric === "slat" ? r.model!.slat_ns : r.model!.cpu_ns,
    source: "model",
  }));
  for (const c of PUBLISHED) {
    if (!sizes.includes(c.bs) || !qds.includes(c.qd)) continue;
    values.push({
      bs: sizeLabel(c.bs),
      bsBytes: c.bs,
      qd: `QD${c.qd}`,
      path: c.path,
      line: "published",
      ns: metric === "slat" ? c.slatNs : Math.round(publishedCpuNs(c)),
      source: "published (Busch 2022)",
    });
  }
  const x = {
    field: "bs",
    type: "ordinal",
    sort: sizes.map(sizeLabel),
    title: "block size",
    axis: { labelAngle: 0 },
  };
  const y = {
    field: "ns",
    type: "quantitative",
    title: metric === "slat" ? "kernel slat, ns (model)" : "kernel CPU per I/O, ns (model)",
  };
  const color = { field: "path", type: "nominal", scale: PATH_COLORS, title: "path" };
  return {
    title: metric === "slat"
      ? "Submission latency: modelled from counts (lines) and published (points)"
      : "CPU per I/O: modelled (lines) and published sys%/IOPS (points)",
    data: { values },
    facet: {
      column: { field: "qd", type: "nominal", title: null, sort: qds.map((q) => `QD${q}`) },
    },
    spec: {
      width: 250,
      height: 200,
      layer: [
        {
          transform: [{ filter: "datum.source === 'model'" }],
          mark: { type: "line", point: true, strokeWidth: 2 },
          encoding: {
            x,
            y,
            color,
            strokeDash: { field: "line", type: "nominal", title: "model: IOMMU" },
            detail: { field: "line" },
          },
        },
        {
          transform: [{ filter: "datum.source !== 'model'" }],
          mark: { type: "point", shape: "diamond", size: 120, filled: false, strokeWidth: 2 },
          encoding: {
            x,
            y,
            color,
            shape: { field: "source", type: "nominal", title: null },
          },
        },
      ],
    },
    resolve: { scale: { y: "shared" } },
  };
}

/** IOPS, or per-I/O IOMMU work, against IOMMU mode: bars per path, panels by size and QD. */
export function iommuBarsSpec(records: readonly WorkloadRecord[], what: "iops" | "iommu"): Spec {
  const variant = variantOf(records);
  const sel = records.filter((r) => what === "iops" || r.perIo);
  const modes = IOMMU_ORDER.filter((m) => sel.some((r) => r.iommu === m));
  const values: Spec[] = sel.map((r, rec) => {
    const p = r.perIo;
    return {
      rec,
      iommu: r.iommu,
      path: r.path,
      panel: [`${sizeLabel(r.bs)} QD${r.qd}`, variant(r)].filter((x) => x).join(" "),
      value: what === "iops" ? Math.round(r.iops) : p!.iovaAllocs + p!.iovaFrees +
        p!.iommuPteWrites + p!.iommuPteClears + p!.iotlbInvalidations + p!.iotlbFlushes,
    };
  });
  return {
    title: what === "iops"
      ? "IOPS by IOMMU mode (sim: the simulation's own speed)"
      : "IOMMU work per I/O: IOVA allocs+frees, PTE writes+clears, IOTLB invalidations+flushes",
    data: { values },
    facet: { field: "panel", type: "nominal", title: null, sort: panelOrder(values, sel) },
    columns: 3,
    spec: {
      width: 180,
      height: 150,
      mark: "bar",
      encoding: {
        x: {
          field: "iommu",
          type: "nominal",
          sort: modes,
          title: "IOMMU",
          axis: { labelAngle: -30 },
        },
        xOffset: { field: "path", sort: PATH_COLORS.domain },
        y: {
          field: "value",
          type: "quantitative",
          title: what === "iops" ? "IOPS" : "operations per I/O",
        },
        color: { field: "path", type: "nominal", scale: PATH_COLORS, title: "path" },
      },
    },
    resolve: { scale: { y: "independent" } },
  };
}

/** The modelled kernel cost per I/O, stacked by stage (both sides), per path; panels by config. */
export function stageStackSpec(records: readonly WorkloadRecord[]): Spec {
  const variant = variantOf(records);
  const values: Spec[] = [];
  const sel = records.filter((r) => r.perIoBySide);
  for (const [rec, r] of sel.entries()) {
    const panel = [`${sizeLabel(r.bs)} QD${r.qd} ${r.iommu}`, variant(r)].filter((x) => x)
      .join(" ");
    const byStage = new Map<string, number>();
    for (const t of modelTerms(r.perIoBySide!)) {
      const stage = t.side === "completion" ? "completion" : EVENT_STAGE[t.event] ?? t.event;
      byStage.set(stage, (byStage.get(stage) ?? 0) + t.total);
    }
    for (const [stage, ns] of byStage) {
      values.push({ rec, panel, path: r.path, stage, ns: Math.round(ns) });
    }
  }
  const order = [
    "syscall",
    "io_uring",
    "iov_iter",
    "iov_iter (pin)",
    "bio",
    "blk_mq",
    "dma_map",
    "iommu",
    "nvme_prep",
    "completion",
  ];
  return {
    title: "Modelled kernel CPU per I/O by stage (completion: everything after the doorbell)",
    data: { values },
    transform: [{
      calculate: `indexof(${JSON.stringify(order)}, datum.stage)`,
      as: "stageOrder",
    }],
    facet: { field: "panel", type: "nominal", title: null, sort: panelOrder(values, sel) },
    columns: 3,
    spec: {
      width: 150,
      height: 160,
      mark: "bar",
      encoding: {
        x: { field: "path", type: "nominal", sort: PATH_COLORS.domain, title: null },
        y: { field: "ns", type: "quantitative", stack: "zero", title: "ns per I/O (model)" },
        color: {
          field: "stage",
          type: "nominal",
          sort: order,
          scale: { domain: order, scheme: "tableau10" },
          title: "stage",
        },
        order: { field: "stageOrder", type: "quantitative", sort: "ascending" },
      },
    },
    resolve: { scale: { y: "independent" } },
  };
}

/** Every chart of a run, one vega-lite spec (vertically concatenated). */
export function reportSpec(records: readonly WorkloadRecord[]): Spec {
  const charts: Spec[] = [];
  if (records.some((r) => r.model)) {
    charts.push(modelLinesSpec(records, "slat"), modelLinesSpec(records, "cpu"));
  }
  charts.push(iommuBarsSpec(records, "iops"));
  if (records.some((r) => r.perIo)) {
    charts.push(iommuBarsSpec(records, "iommu"), stageStackSpec(records));
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    config: DOC_CONFIG,
    vconcat: charts,
    resolve: { scale: { color: "independent" } },
    spacing: 40,
    padding: 16,
  };
}

/** Render a vega-lite spec to SVG, headlessly. */
export async function renderSvg(spec: Spec): Promise<string> {
  // deno-lint-ignore no-explicit-any
  const compiled = vl.compile(spec as any).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One self-contained page: the charts (inline SVG) and the tables (as printed). */
export function htmlReport(
  title: string,
  svg: string,
  tables: { heading: string; text: string }[],
) {
  const parts = tables.map((t) =>
    `<h2>${escapeHtml(t.heading)}</h2>\n<pre>${escapeHtml(t.text)}</pre>`
  );
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { background: #fff; color: #111; font-family: sans-serif; margin: 24px; }
pre { font-size: 12px; overflow-x: auto; background: #f7f7f7; padding: 8px; }
svg { max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${svg}
${parts.join("\n")}
</body>
</html>
`;
}
