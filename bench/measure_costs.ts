/**
 * Measure the cost model's measured entries on this machine and write them
 * into `bench/kernel_costs.json` (then refit: `deno task costs:fit`).
 *
 *   deno task costs:measure [-- --rounds=N] [--dry-run]
 *
 * Runs `ffi/native/build/cost_probe` (built by `deno task build`), which
 * prints ns per operation, best of its rounds; each measured entry's `probe`
 * names how its value is derived from that output.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { COST_TABLE, type CostTable } from "./cost_model.ts";

const PROBE = new URL("../ffi/native/build/cost_probe", import.meta.url).pathname;
/** Where the table lives. */
export const COST_TABLE_PATH = new URL("./kernel_costs.json", import.meta.url).pathname;

/**
 * Evaluate a probe expression (`name`, `a - b`, `a / 2`) against the probe's
 * output; throws naming what is missing.
 */
export function evalProbe(expr: string, out: Record<string, number>): number {
  const m = /^\s*(\w+)\s*(?:([-/])\s*(\w+))?\s*$/.exec(expr);
  if (!m) throw new Error(`probe expression '${expr}' is not 'a', 'a - b' or 'a / n'`);
  const val = (k: string) => {
    if (/^\d+(\.\d+)?$/.test(k)) return Number(k);
    if (!(k in out)) throw new Error(`cost_probe printed no '${k}'`);
    return out[k];
  };
  const a = val(m[1]);
  if (!m[2]) return a;
  const b = val(m[3]);
  return m[2] === "-" ? a - b : a / b;
}

/** A copy of `t` with every measured ns taken from the probe's output. */
export function applyProbe(t: CostTable, out: Record<string, number>, date: string): CostTable {
  const next: CostTable = structuredClone(t);
  for (const [k, m] of Object.entries(next.measured)) {
    const v = evalProbe(m.probe, out);
    if (!(v >= 0)) throw new Error(`measured ${k} = ${v} ns from '${m.probe}': not a cost`);
    m.ns = Number(v.toPrecision(4));
  }
  next.measuredBy.date = date;
  return next;
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      options: {
        rounds: { type: "string" },
        "dry-run": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`costs:measure: ${(e as Error).message}`);
    return 2;
  }
  if (values.help) {
    console.log(`usage: deno task costs:measure -- [flags]
  --rounds=N    cost_probe rounds, best of N (1..100, default 9)
  --dry-run     print the values, do not write ${COST_TABLE_PATH}`);
    return 0;
  }
  const rounds = values.rounds ?? "9";
  if (!/^\d+$/.test(rounds) || Number(rounds) < 1 || Number(rounds) > 100) {
    console.error(`costs:measure: --rounds: '${rounds}' is not an integer in 1..100`);
    return 2;
  }
  try {
    Deno.statSync(PROBE);
  } catch {
    console.error(`costs:measure: ${PROBE} is missing: run deno task build (needs gcc, liburing)`);
    return 1;
  }
  const r = await new Deno.Command(PROBE, { args: [`--rounds=${rounds}`] }).output();
  if (!r.success) {
    console.error(`costs:measure: cost_probe failed: ${new TextDecoder().decode(r.stderr)}`);
    return 1;
  }
  const out = JSON.parse(new TextDecoder().decode(r.stdout)) as Record<string, number>;
  const next = applyProbe(COST_TABLE, out, new Date().toISOString().slice(0, 10));
  for (const [k, m] of Object.entries(next.measured)) {
    console.log(`${k.padEnd(12)} ${String(m.ns).padStart(10)} ns  ${m.what} [${m.probe}]`);
  }
  if (values["dry-run"]) return 0;
  Deno.writeTextFileSync(COST_TABLE_PATH, JSON.stringify(next, null, 2) + "\n");
  console.log(`wrote ${COST_TABLE_PATH}; now refit: deno task costs:fit`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
