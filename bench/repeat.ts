/**
 * Repeated runs of one configuration (`--repeat=N`): the spread of each
 * measured figure (min, median, max over the runs) and whether two paths'
 * figures differ beyond it (their min-max ranges do not overlap).
 *
 * @module
 */

import type { WorkloadRecord } from "./workload.ts";

/** Minimum, median and maximum of one figure over the repeats. */
export interface Spread {
  /** Smallest. */
  min: number;
  /** Median (the lower middle one for an even count). */
  median: number;
  /** Largest. */
  max: number;
}

/** The spread of every measured figure of a configuration over its repeats. */
export interface RepeatSpread {
  /** How many runs. */
  runs: number;
  /** IOPS. */
  iops: Spread;
  /** Mean submission latency, ns. */
  slatMean: Spread;
  /** Median completion latency, ns. */
  clatP50: Spread;
  /** 99th percentile completion latency, ns. */
  clatP99: Spread;
  /** Host CPU per I/O (sim: the TypeScript model's), ns; null where not measured. */
  cpuNsPerIo: Spread | null;
}

/** min / median / max of `xs` (rounded to the unit). */
export function spreadOf(xs: readonly number[]): Spread {
  if (xs.length === 0) throw new RangeError("spreadOf: no values");
  const s = [...xs].sort((a, b) => a - b);
  return {
    min: Math.round(s[0]),
    median: Math.round(s[Math.floor((s.length - 1) / 2)]),
    max: Math.round(s[s.length - 1]),
  };
}

/**
 * One record for N runs of a configuration: the run with the median IOPS,
 * carrying the spread of every figure. The counts and the model are the
 * same in every run on sim (a test holds that); on real they may differ by
 * timing, and the median run's are kept.
 */
export function combineRepeats(runs: readonly WorkloadRecord[]): WorkloadRecord {
  if (runs.length === 0) throw new RangeError("combineRepeats: no runs");
  const byIops = [...runs].sort((a, b) => a.iops - b.iops);
  const mid = byIops[Math.floor((byIops.length - 1) / 2)];
  const cpu = runs.map((r) => r.cpuNsPerIo).filter((x): x is number => x !== null);
  return {
    ...mid,
    spread: {
      runs: runs.length,
      iops: spreadOf(runs.map((r) => r.iops)),
      slatMean: spreadOf(runs.map((r) => r.slat.mean)),
      clatP50: spreadOf(runs.map((r) => r.clat.p50)),
      clatP99: spreadOf(runs.map((r) => r.clat.p99)),
      cpuNsPerIo: cpu.length === runs.length ? spreadOf(cpu) : null,
    },
  };
}

/** Whether two spreads' min-max ranges overlap (then the difference is not significant). */
export function overlaps(a: Spread, b: Spread): boolean {
  return a.min <= b.max && b.min <= a.max;
}

/** The configuration a record belongs to, path aside. */
function groupKey(r: WorkloadRecord): string {
  return [r.backend, r.premap, r.iommu, r.rw, r.bs, r.qd].join("/");
}

/**
 * For a record with a spread: each other path of its configuration, and
 * whether its IOPS differ (`dma vs bvec +6%`) or not (`n.s.`: the ranges
 * overlap over the repeats). Empty without repeats.
 */
export function iopsVersusOthers(r: WorkloadRecord, all: readonly WorkloadRecord[]): string {
  if (!r.spread || r.spread.runs < 2) return "";
  const out: string[] = [];
  for (const o of all) {
    if (o === r || o.path === r.path || !o.spread || groupKey(o) !== groupKey(r)) continue;
    if (overlaps(r.spread.iops, o.spread.iops)) out.push(`${o.path} n.s.`);
    else {
      const pct = (r.spread.iops.median / o.spread.iops.median - 1) * 100;
      out.push(`${o.path} ${pct >= 0 ? "+" : ""}${pct.toFixed(0)}%`);
    }
  }
  return out.join(", ");
}
