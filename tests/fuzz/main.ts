/**
 * `deno task fuzz -- --ops=N --seed=S [--seeds=K] [--per-run=M] [--replay=FILE]`:
 * run the io_uring mirror fuzzer (`tests/fuzz/fuzz.ts`) for N operations in
 * all, in runs of M operations (default 5,000) from seeds S, S+1, ... (or K
 * runs of N/K). Prints the SQEs and CQEs exercised and the outcome counts;
 * on a failure, the seed, the broken invariant, the shrunk case (also written
 * to `fuzz-failure-SEED.json`) and the command that replays it, then exits 1.
 *
 * `--lifecycle` runs the lifecycle fuzzer instead (`tests/fuzz/lifecycle.ts`:
 * premapped and ordinary I/O with unmap, unregister, update, slot
 * replacement, close and teardown in flight, data checked against a shadow,
 * on v2, v3 and hardened in turn), with the same flags (runs of 2,000
 * operations unless --per-run says otherwise).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { configFor, describeOps, execute, type FuzzOp, generate, minimize } from "./fuzz.ts";
import { lcConfigFor, lcExecute, lcGenerate, lcMinimize } from "./lifecycle.ts";

const { values } = parseArgs({
  args: Deno.args.filter((a) => a !== "--"),
  options: {
    ops: { type: "string", default: "100000" },
    seed: { type: "string", default: "1" },
    "per-run": { type: "string", default: "5000" },
    replay: { type: "string" },
    lifecycle: { type: "boolean", default: false },
  },
});

function int(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name}: expected a non-negative integer, got '${v}'`);
    Deno.exit(2);
  }
  return n;
}

if (values.lifecycle) {
  const total = int("ops", values.ops);
  const first = int("seed", values.seed);
  const perRun = Math.max(
    10,
    int("per-run", Deno.args.some((a) => a.startsWith("--per-run")) ? values["per-run"] : "2000"),
  );
  const t0 = performance.now();
  const by = new Map<string, { runs: number; ios: number; raced: number; flawed: number }>();
  let ops = 0;
  for (let seed = first; ops < total; seed++) {
    const n = Math.min(perRun, total - ops);
    const list = lcGenerate(seed, n);
    const cfg = lcConfigFor(seed);
    const r = lcExecute(seed, list, cfg);
    ops += n;
    const b = by.get(cfg.premap) ?? { runs: 0, ios: 0, raced: 0, flawed: 0 };
    b.runs++;
    b.ios += r.ios;
    b.raced += r.raced;
    b.flawed += r.flawed;
    by.set(cfg.premap, b);
    if (r.failure) {
      console.log(
        `FAIL seed ${seed} (${cfg.premap}, iommu ${cfg.iommu}): ${r.failure.invariant} at op ${r.failure.op}`,
      );
      console.log(r.failure.detail);
      const small = lcMinimize(seed, list.slice(0, r.failure.op + 1), cfg, r.failure.invariant);
      console.log(`minimized to ${small.length} operations:`);
      console.log(small.map((o, i) => `  ${i}: ${JSON.stringify(o)}`).join("\n"));
      console.log(`replay: deno task fuzz -- --lifecycle --seed=${seed} --ops=${n} --per-run=${n}`);
      Deno.exit(1);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(`clean: ${ops} lifecycle operations from seed ${first}, ${secs.toFixed(1)} s`);
  for (const [v, b] of by) {
    console.log(
      `  ${v}: ${b.runs} runs, ${b.ios} I/Os, ${b.raced} raced a lifecycle event, ${b.flawed} ` +
        `failed or moved wrong bytes, each shown by a checking layer`,
    );
  }
  Deno.exit(0);
}

if (values.replay) {
  const c = JSON.parse(Deno.readTextFileSync(values.replay)) as { seed: number; ops: FuzzOp[] };
  const r = execute(c.seed, c.ops, configFor(c.seed));
  console.log(
    r.failure ? `FAIL ${r.failure.invariant} at op ${r.failure.op}: ${r.failure.detail}` : "clean",
  );
  Deno.exit(r.failure ? 1 : 0);
}

const total = int("ops", values.ops);
const first = int("seed", values.seed);
const perRun = Math.max(10, int("per-run", values["per-run"]));
const t0 = performance.now();
let ops = 0;
let sqes = 0;
let cqes = 0;
let runs = 0;
let nvme = 0;
const outcomes = new Map<string, number>();
for (let seed = first; ops < total; seed++) {
  const n = Math.min(perRun, total - ops);
  const list = generate(seed, n);
  const cfg = configFor(seed);
  const r = execute(seed, list, cfg);
  ops += list.length;
  sqes += r.sqes;
  cqes += r.cqes;
  runs++;
  nvme += r.nvmeCommands;
  for (const [k, v] of r.outcomes) outcomes.set(k, (outcomes.get(k) ?? 0) + v);
  if (r.failure) {
    console.log(
      `FAIL seed ${seed} (${cfg.premap}, iommu ${cfg.iommu}): ${r.failure.invariant} at op ${r.failure.op}`,
    );
    console.log(r.failure.detail);
    const small = minimize(seed, list.slice(0, r.failure.op + 1), cfg, r.failure.invariant);
    const again = execute(seed, small, cfg);
    const file = `fuzz-failure-${seed}.json`;
    Deno.writeTextFileSync(file, JSON.stringify({ seed, ops: small }));
    console.log(
      `minimized to ${small.length} operations (${again.failure?.invariant}: ${
        again.failure?.detail.split("\n")[0]
      }):`,
    );
    console.log(describeOps(small));
    console.log(`replay: deno task fuzz -- --seed=${seed} --ops=${n} --per-run=${n}`);
    console.log(`   or:  deno task fuzz -- --replay=${file}`);
    Deno.exit(1);
  }
}
const secs = (performance.now() - t0) / 1000;
const errnos = [...outcomes.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) =>
  `${k === "ok" ? "ok" : `-${k}`} x${v}`
);
console.log(
  `clean: ${ops} operations, ${sqes} SQEs, ${cqes} CQEs, ${nvme} NVMe commands, ` +
    `${runs} runs from seed ${first}, ${secs.toFixed(1)} s`,
);
console.log(`CQE results: ${errnos.join(", ")}`);
