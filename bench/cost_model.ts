/**
 * The kernel cost model: per-I/O counts (split by side, `sim/stats.ts`) times
 * a per-event cost in ns (`bench/kernel_costs.json`) gives a modelled kernel
 * submission latency (`slat_ns`: the submission side only, as fio's slat) and
 * CPU per I/O (`cpu_ns`: both sides).
 *
 * Every cost in the table is either measured on this machine
 * (`deno task costs:measure`, `ffi/native/cost_probe.c`) or one of at most six
 * free parameters fitted by `deno task costs:fit` (`bench/fit_costs.ts`) on the
 * published QD1 cells at 4k and 64k. Every counter of `COUNTER_NAMES` is either
 * priced here or listed as costing no host CPU, with the reason.
 *
 * @module
 */

import TABLE from "./kernel_costs.json" with { type: "json" };
import { COUNTER_NAMES, type CounterName, type Side } from "../sim/stats.ts";

/** A cost measured on this machine. */
export interface MeasuredCost {
  /** ns per unit. */
  ns: number;
  /** What was timed. */
  what: string;
  /** How the value is derived from `cost_probe`'s output. */
  probe: string;
}

/** A free parameter of the fit. */
export interface FittedCost {
  /** ns per unit, as fitted. */
  ns: number;
  /** What it stands for in the kernel. */
  what: string;
}

/** How one counted event is priced. */
export interface EventCost {
  /** Key into `measured` or `fitted`. */
  cost: string;
  /** Units of that cost per count (default 1), e.g. 64 bytes per NVMe command copied. */
  times?: number;
  /** The kernel work one count stands for. */
  what: string;
}

/** The cost table as stored. */
export interface CostTable {
  /** Where the measured values came from. */
  measuredBy: { command: string; date: string; note: string };
  /** Measured costs. */
  measured: Record<string, MeasuredCost>;
  /** How the free parameters were fitted. */
  fittedBy: { command: string; cells: string; objective: string };
  /** The free parameters. */
  fitted: Record<string, FittedCost>;
  /** One entry per counter that costs host CPU. */
  events: Record<string, EventCost>;
  /** Counters that cost no host CPU in the modelled kernel, with why. */
  uncosted: Record<string, string>;
}

/** The table in the repository. */
export const COST_TABLE: CostTable = TABLE as CostTable;

/** At most this many free parameters (issue 9). */
export const MAX_FREE_PARAMETERS = 6;

/** Where one cost comes from. */
export type CostSource = "measured" | "fitted";

/** Resolve an event's ns per count and the source of that number. */
export function eventCost(
  t: CostTable,
  event: string,
): { ns: number; source: CostSource; key: string } {
  const e = t.events[event];
  if (!e) throw new Error(`cost table: no entry for event ${event}`);
  const m = t.measured[e.cost];
  const f = t.fitted[e.cost];
  if (m && f) throw new Error(`cost table: ${e.cost} is both measured and fitted`);
  if (!m && !f) throw new Error(`cost table: event ${event} names unknown cost ${e.cost}`);
  return { ns: (m ?? f).ns * (e.times ?? 1), source: m ? "measured" : "fitted", key: e.cost };
}

/**
 * Check a table against the counters: every counter priced or listed as
 * uncosted (not both), every cost key known, at most six free parameters,
 * every value finite and non-negative. Returns the problems found.
 */
export function validateCostTable(t: CostTable): string[] {
  const out: string[] = [];
  const names = new Set<string>(COUNTER_NAMES);
  for (const n of COUNTER_NAMES) {
    const priced = n in t.events, free = n in t.uncosted;
    if (!priced && !free) out.push(`counter ${n} is neither priced nor listed as uncosted`);
    if (priced && free) out.push(`counter ${n} is both priced and listed as uncosted`);
  }
  for (const n of [...Object.keys(t.events), ...Object.keys(t.uncosted)]) {
    if (!names.has(n)) out.push(`${n} is not a counter of sim/stats.ts`);
  }
  for (const [n, e] of Object.entries(t.events)) {
    const m = e.cost in t.measured, f = e.cost in t.fitted;
    if (!m && !f) out.push(`event ${n}: unknown cost ${e.cost}`);
    if (m && f) out.push(`event ${n}: ${e.cost} is both measured and fitted`);
    if (e.times !== undefined && !(e.times > 0)) out.push(`event ${n}: times must be > 0`);
  }
  const nFree = Object.keys(t.fitted).length;
  if (nFree > MAX_FREE_PARAMETERS) {
    out.push(`${nFree} free parameters (at most ${MAX_FREE_PARAMETERS})`);
  }
  for (const [k, v] of [...Object.entries(t.measured), ...Object.entries(t.fitted)]) {
    if (!Number.isFinite(v.ns) || v.ns < 0) out.push(`cost ${k}: ${v.ns} is not a cost in ns`);
  }
  const used = new Set(Object.values(t.events).map((e) => e.cost));
  for (const k of [...Object.keys(t.measured), ...Object.keys(t.fitted)]) {
    if (!used.has(k)) out.push(`cost ${k} prices no event`);
  }
  return out;
}

/** Per-I/O counts of one record, split by side. */
export type CountsBySide = Record<Side, Record<string, number>>;

/** The modelled kernel cost of one I/O. */
export interface ModelCost {
  /** Modelled submission latency: the submission side's events, ns. */
  slat_ns: number;
  /** Modelled CPU per I/O: both sides, ns. */
  cpu_ns: number;
}

/** One event's share of a modelled cost. */
export interface ModelTerm {
  /** Counter name. */
  event: string;
  /** Side. */
  side: Side;
  /** Count per I/O. */
  count: number;
  /** ns per count. */
  ns: number;
  /** count x ns. */
  total: number;
  /** Whether the ns is measured or fitted. */
  source: CostSource;
}

/** Every priced event with a nonzero count, per side. */
export function modelTerms(counts: CountsBySide, t: CostTable = COST_TABLE): ModelTerm[] {
  const out: ModelTerm[] = [];
  for (const side of ["submission", "completion"] as const) {
    for (const [event, count] of Object.entries(counts[side])) {
      if (count === 0 || !(event in t.events)) continue;
      const c = eventCost(t, event);
      out.push({ event, side, count, ns: c.ns, total: count * c.ns, source: c.source });
    }
  }
  return out;
}

/** Round to the ns: the model claims no more. */
function ns(x: number): number {
  return Math.round(x);
}

/**
 * The modelled kernel cost of one I/O from its own per-side counts.
 *
 * `slat_ns` is fio's slat: an I/O's submission ends when the io_uring_enter
 * that carries it returns, so each I/O of a batch waits for the whole batch's
 * submission work. That is the submission side's cost per submitting syscall
 * (per I/O divided by submitting enters per I/O); at QD1, one enter carries
 * one I/O and it is the submission side's cost per I/O.
 */
export function modelCost(counts: CountsBySide, t: CostTable = COST_TABLE): ModelCost {
  let sub = 0, comp = 0;
  for (const term of modelTerms(counts, t)) {
    if (term.side === "submission") sub += term.total;
    else comp += term.total;
  }
  const enters = counts.submission.enterCalls ?? 0;
  const perEnter = enters > 0 ? sub / enters : sub;
  return { slat_ns: ns(perEnter), cpu_ns: ns(sub + comp) };
}

/** Sum of `counts` over the events priced by cost key `key` (with their `times`), one side. */
export function unitsOf(t: CostTable, key: string, counts: Record<string, number>): number {
  let u = 0;
  for (const [event, e] of Object.entries(t.events)) {
    if (e.cost === key) u += (counts[event] ?? 0) * (e.times ?? 1);
  }
  return u;
}

/** The counts that tell two records apart, as `label count` pairs (`a` minus `b`), both sides. */
export function countDifference(
  a: CountsBySide,
  b: CountsBySide,
  t: CostTable = COST_TABLE,
): { event: string; side: Side; delta: number; ns: number }[] {
  const out: { event: string; side: Side; delta: number; ns: number }[] = [];
  for (const side of ["submission", "completion"] as const) {
    for (const event of Object.keys(t.events)) {
      const delta = (a[side][event] ?? 0) - (b[side][event] ?? 0);
      if (Math.abs(delta) < 1e-9) continue;
      out.push({ event, side, delta, ns: delta * eventCost(t, event).ns });
    }
  }
  return out.sort((x, y) => Math.abs(y.ns) - Math.abs(x.ns));
}

/** A counter's name, typed, when `s` is one. */
export function asCounter(s: string): CounterName | undefined {
  return (COUNTER_NAMES as readonly string[]).includes(s) ? s as CounterName : undefined;
}
