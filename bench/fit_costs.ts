/**
 * Fit the cost model's free parameters (`fitted` in `bench/kernel_costs.json`)
 * by non-negative least squares on the published QD1 cells at 4k and 64k, and
 * check the model on the QD1 16k cells, which the fit never sees.
 *
 *   deno task costs:fit              # fit, print, write the table
 *   deno task costs:fit -- --check   # refit and fail if the stored values differ
 *
 * Counts come from the sim at QD1, randread, IOMMU lazy (the published runs'
 * most likely mode: x86's default domain type has been lazy since 5.15). Each
 * fitted cell gives two observations: fio's slat against the submission side,
 * and the CPU per I/O implied by sys% / IOPS against both sides. The objective
 * is the sum of squared relative errors, so a 64k cell weighs no more than a
 * 4k one; measured costs are held fixed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openTestbed } from "../mod.ts";
import { COST_TABLE, type CostTable, type CountsBySide, unitsOf } from "./cost_model.ts";
import { type PublishedCell, publishedCell, publishedCpuNs } from "./published.ts";
import { type IoPath, runWorkload, warmUp } from "./workload.ts";
import { COST_TABLE_PATH } from "./measure_costs.ts";

/** Sizes the fit uses; 16k is held out as the check. */
export const FIT_SIZES = [4096, 65536] as const;
/** The held-out size. */
export const CHECK_SIZES = [16384] as const;
const PATHS: readonly IoPath[] = ["none", "bvec", "dma"];

/** One observation of the fit or the check. */
export interface Observation {
  /** The published cell. */
  cell: PublishedCell;
  /** slat (submission side) or cpu (both sides). */
  metric: "slat" | "cpu";
  /** Published value, ns. */
  published: number;
  /** Per-I/O counts of the sim run of that cell. */
  counts: CountsBySide;
}

/** Per-I/O counts, by side, of the sim at QD1 randread for each (bs, path), IOMMU `iommu`. */
export function simCounts(
  sizes: readonly number[],
  iommu: "lazy" | "strict" = "lazy",
  ios = 400,
): Map<string, CountsBySide> {
  using tb = openTestbed({ backend: "sim", seed: 1, iommu, dmaDebug: false, timing: false });
  warmUp(tb, PATHS, sizes, 1, 1);
  const out = new Map<string, CountsBySide>();
  for (const bs of sizes) {
    for (const path of PATHS) {
      const r = runWorkload(tb, { path, bs, qd: 1, rw: "randread", ios, seed: 1, verify: false });
      if (!r.perIoBySide) throw new Error("sim record without counts");
      out.set(`${bs}/${path}`, r.perIoBySide);
    }
  }
  return out;
}

/** The observations (slat and cpu) of the published QD1 cells at `sizes`. */
export function observations(
  sizes: readonly number[],
  counts: Map<string, CountsBySide>,
): Observation[] {
  const out: Observation[] = [];
  for (const bs of sizes) {
    for (const path of PATHS) {
      const cell = publishedCell(1, bs, path)!;
      const c = counts.get(`${bs}/${path}`)!;
      out.push({ cell, metric: "slat", published: cell.slatNs, counts: c });
      out.push({ cell, metric: "cpu", published: publishedCpuNs(cell), counts: c });
    }
  }
  return out;
}

function sideSum(c: CountsBySide, metric: "slat" | "cpu"): Record<string, number> {
  if (metric === "slat") return c.submission;
  const both: Record<string, number> = { ...c.submission };
  for (const [k, v] of Object.entries(c.completion)) both[k] = (both[k] ?? 0) + v;
  return both;
}

/** Modelled value of one observation under table `t`. */
export function modelled(t: CostTable, o: Observation): number {
  const counts = sideSum(o.counts, o.metric);
  let v = 0;
  for (const k of [...Object.keys(t.measured), ...Object.keys(t.fitted)]) {
    const ns = (t.measured[k] ?? t.fitted[k]).ns;
    v += unitsOf(t, k, counts) * ns;
  }
  return v;
}

/** Solve the square system `a x = b` by Gaussian elimination with partial pivoting; null if singular. */
export function solve(a: number[][], b: number[]): number[] | null {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    if (Math.abs(m[p][c]) < 1e-12) return null;
    [m[c], m[p]] = [m[p], m[c]];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r][c] / m[c][c];
      for (let k = c; k <= n; k++) m[r][k] -= f * m[c][k];
    }
  }
  return m.map((row, i) => row[n] / row[i]);
}

/**
 * Non-negative least squares, min |A x - y|^2 with x >= 0, exactly: the
 * unconstrained solution on every subset of the columns, the best feasible
 * one (2^n subsets; n <= 6 here).
 */
export function nnls(A: number[][], y: number[]): { x: number[]; sse: number } {
  const n = A[0].length;
  let best: { x: number[]; sse: number } | null = null;
  for (let mask = 0; mask < 1 << n; mask++) {
    const cols = [...Array(n).keys()].filter((j) => mask & (1 << j));
    const x = new Array(n).fill(0);
    if (cols.length > 0) {
      const ata = cols.map((i) => cols.map((j) => A.reduce((s, row) => s + row[i] * row[j], 0)));
      const aty = cols.map((i) => A.reduce((s, row, r) => s + row[i] * y[r], 0));
      const sol = solve(ata, aty);
      if (!sol || sol.some((v) => v < 0)) continue;
      cols.forEach((j, k) => x[j] = sol[k]);
    }
    const sse = A.reduce(
      (s, row, r) => s + (row.reduce((a, v, j) => a + v * x[j], 0) - y[r]) ** 2,
      0,
    );
    if (!best || sse < best.sse - 1e-15) best = { x, sse };
  }
  return best!;
}

/** Fit the table's free parameters on `obs`; returns a copy of `t` with them set (0.1 ns). */
export function fit(t: CostTable, obs: readonly Observation[]): CostTable {
  const keys = Object.keys(t.fitted);
  const fixed: CostTable = structuredClone(t);
  for (const k of keys) fixed.fitted[k].ns = 0;
  const A: number[][] = [];
  const y: number[] = [];
  for (const o of obs) {
    const counts = sideSum(o.counts, o.metric);
    const w = 1 / o.published;
    A.push(keys.map((k) => unitsOf(t, k, counts) * w));
    y.push((o.published - modelled(fixed, o)) * w);
  }
  const { x } = nnls(A, y);
  keys.forEach((k, i) => fixed.fitted[k].ns = Math.round(x[i] * 10) / 10);
  return fixed;
}

/** One line per observation: published, modelled, ratio. */
export function fitReport(t: CostTable, obs: readonly Observation[], label: string): string[] {
  return obs.map((o) => {
    const m = modelled(t, o);
    const c = o.cell;
    return `${label} ${String(c.bs / 1024).padStart(2)}k ${c.path.padEnd(4)} ${
      o.metric.padEnd(4)
    }` +
      ` published ${Math.round(o.published).toString().padStart(5)} ns  model ${
        Math.round(m).toString().padStart(5)
      } ns  ratio ${(m / o.published).toFixed(3)}`;
  });
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: { check: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    }));
  } catch (e) {
    console.error(`costs:fit: ${(e as Error).message}`);
    return 2;
  }
  if (values.help) {
    console.log(`usage: deno task costs:fit -- [flags]
  --check    refit and exit 1 if ${COST_TABLE_PATH} holds other fitted values (write nothing)`);
    return 0;
  }
  const counts = simCounts([...FIT_SIZES, ...CHECK_SIZES]);
  const fitObs = observations(FIT_SIZES, counts);
  const checkObs = observations(CHECK_SIZES, counts);
  const next = fit(COST_TABLE, fitObs);
  const m = COST_TABLE.measuredBy;
  console.log(`measured on ${m.date || "(never)"} by ${m.command} (ffi/native/cost_probe.c):`);
  for (const [k, v] of Object.entries(COST_TABLE.measured)) {
    console.log(`measured ${k.padEnd(10)} ${String(v.ns).padStart(8)} ns  [${v.probe}]`);
  }
  for (const [k, f] of Object.entries(next.fitted)) {
    console.log(`fitted   ${k.padEnd(10)} ${f.ns.toFixed(1).padStart(8)} ns`);
  }
  console.log("published QD1 cells (randread, IOMMU lazy) against the model, cpu = sys% / IOPS:");
  for (const l of fitReport(next, fitObs, "fit  ")) console.log(l);
  for (const l of fitReport(next, checkObs, "check")) console.log(l);
  if (values.check) {
    const bad = Object.keys(next.fitted).filter((k) =>
      Math.abs(next.fitted[k].ns - COST_TABLE.fitted[k].ns) > 0.051
    );
    for (const k of bad) {
      console.error(
        `costs:fit --check: ${k} is ${COST_TABLE.fitted[k].ns} ns in the table, the fit gives ${
          next.fitted[k].ns
        } (run deno task costs:fit)`,
      );
    }
    return bad.length ? 1 : 0;
  }
  await Deno.writeTextFile(COST_TABLE_PATH, JSON.stringify(next, null, 2) + "\n");
  console.log(`wrote ${COST_TABLE_PATH}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
