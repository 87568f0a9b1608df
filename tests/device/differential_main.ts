/**
 * Command-line runner of the differential device test (longer runs than CI).
 *
 * ```sh
 * deno run -A tests/device/differential_main.ts --cmds=1000000 --seed=7 --variant=plain
 * ```
 *
 * `--variant=asan` needs the ASan/UBSan runtimes in LD_PRELOAD (the test
 * sets that up); `--variant=ts` runs the TS controller against itself (a
 * harness self-check). `--seeds=N` runs seeds S..S+N-1. `--file-media=all|even`
 * puts the C side's namespaces in temporary files (all seeds, or even seeds). Prints one JSON line
 * per seed and, at the end, the status counts and the library ledger.
 * Exit status: 0 all equal, 1 a mismatch (the report is on stderr), 2 usage.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { NvmeEmu, nvmeEmuUnavailable } from "../../ffi/nvme_emu.ts";
import {
  addCounts,
  DiffMismatch,
  type DiffOptions,
  formatCounts,
  runDifferential,
} from "./differential.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    cmds: { type: "string", default: "20000" },
    seed: { type: "string", default: "1" },
    seeds: { type: "string", default: "1" },
    variant: { type: "string", default: "plain" },
    "full-check-every": { type: "string", default: "400" },
    "strict-counters": { type: "boolean", default: false },
    "file-media": { type: "string", default: "none" },
  },
  strict: true,
});

function int(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    Deno.exit(2);
  }
  return n;
}

const variant = values.variant as DiffOptions["variant"];
if (!["plain", "asan", "ts"].includes(variant)) {
  console.error(`--variant must be plain, asan or ts, got ${JSON.stringify(values.variant)}`);
  Deno.exit(2);
}
if (variant !== "ts") {
  const why = nvmeEmuUnavailable(variant);
  if (why !== null) {
    console.log(`SKIP differential (${variant}): ${why}`);
    Deno.exit(0);
  }
}
const cmds = int("cmds", values.cmds, 1);
const seed0 = int("seed", values.seed, 0);
const seeds = int("seeds", values.seeds, 1);
const every = int("full-check-every", values["full-check-every"], 1);
const fileMedia = values["file-media"];
if (!["none", "all", "even"].includes(fileMedia)) {
  console.error(`--file-media must be none, all or even, got ${JSON.stringify(fileMedia)}`);
  Deno.exit(2);
}
const total: Record<string, number> = {};
let totalCmds = 0;
const totalFaults: Record<string, number> = {};
let totalCached = 0;
/** Power cuts that found unflushed writes in the cache, and what they did. */
const totalCut = { cuts: 0, writesLost: 0, writesKept: 0, blocksLost: 0 };
const t0 = performance.now();
for (let s = seed0; s < seed0 + seeds; s++) {
  try {
    const sum = runDifferential({
      seed: s,
      cmds,
      variant,
      fullCheckEvery: every,
      strictCounters: values["strict-counters"],
      fileMedia: fileMedia === "all" || (fileMedia === "even" && s % 2 === 0),
    });
    addCounts(total, sum.statuses);
    totalCmds += sum.cmds;
    console.log(JSON.stringify({
      seed: s,
      fileMedia: fileMedia === "all" || (fileMedia === "even" && s % 2 === 0),
      cmds: sum.cmds,
      steps: sum.steps,
      resets: sum.resets,
      modeSwitches: sum.modeSwitches,
      invalidations: sum.invalidations,
      fullChecks: sum.fullChecks,
      staleEpisodes: sum.staleEpisodes,
      staleUses: sum.staleUses,
      cqFull: sum.cqFull,
      cqWraps: sum.cqWraps,
      counters: sum.counters,
      counterDiffs: sum.counterDiffs,
      faultRules: sum.faultRules,
      faultClears: sum.faultClears,
      badCidCqes: sum.badCidCqes,
      timeoutResets: sum.timeoutResets,
      powerCut: sum.powerCut,
    }));
    for (const [k, v] of Object.entries(sum.counters.faults)) {
      totalFaults[k] = (totalFaults[k] ?? 0) + v;
    }
    totalCached += sum.counters.cachedWrites;
    if (sum.powerCut && sum.powerCut.writesLost + sum.powerCut.writesKept > 0) {
      totalCut.cuts++;
      totalCut.writesLost += sum.powerCut.writesLost;
      totalCut.writesKept += sum.powerCut.writesKept;
      totalCut.blocksLost += sum.powerCut.blocksLost;
    }
  } catch (e) {
    if (e instanceof DiffMismatch) {
      console.error(e.message);
      Deno.exit(1);
    }
    throw e;
  }
  if (variant !== "ts") {
    const ledger = NvmeEmu.ledger(variant);
    if (ledger !== 0) {
      console.error(`nvme_emu_ledger() = ${ledger} after destroy (seed ${s})`);
      Deno.exit(1);
    }
  }
}
const secs = (performance.now() - t0) / 1000;
console.log(`${totalCmds} commands in ${secs.toFixed(1)} s; completions by status:`);
console.log(formatCounts(total));
console.log(`FAULTS ${JSON.stringify(totalFaults)}`);
console.log(`CACHE cachedWrites ${totalCached}; power cuts ${JSON.stringify(totalCut)}`);
console.log(`LEDGER ${variant === "ts" ? 0 : NvmeEmu.ledger(variant)}`);
