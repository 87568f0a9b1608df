/**
 * CI slice of the io_uring mirror fuzzer (`deno task fuzz` runs longer):
 * at least 100,000 hostile and well-formed SQEs across seeds and both premap
 * variants, every invariant of `tests/fuzz/fuzz.ts` checked after each
 * operation. A failure names the seed and the shrunk case.
 *
 * Size: FUZZ_SQES (default 100000); first seed: FUZZ_SEED (default 0x10a).
 */

import assert from "node:assert/strict";
import { configFor, describeOps, execute, generate, minimize } from "./fuzz.ts";

const want = Number(Deno.env.get("FUZZ_SQES") ?? "100000");
const firstSeed = Number(Deno.env.get("FUZZ_SEED") ?? String(0x10a));
const PER_RUN = 5000;

Deno.test(`fuzz: ${want} SQEs into the io_uring mirror, every invariant after every operation`, () => {
  const t0 = performance.now();
  let sqes = 0;
  let ops = 0;
  let ok = 0;
  let nvme = 0;
  const errnos = new Set<string>();
  const variants = new Set<string>();
  for (let seed = firstSeed; sqes < want; seed++) {
    const list = generate(seed, PER_RUN);
    const cfg = configFor(seed);
    variants.add(cfg.premap);
    const r = execute(seed, list, cfg);
    if (r.failure) {
      const small = minimize(seed, list.slice(0, r.failure.op + 1), cfg, r.failure.invariant);
      assert.fail(
        `seed ${seed} (${cfg.premap}, iommu ${cfg.iommu}): ${r.failure.invariant} at op ` +
          `${r.failure.op}: ${r.failure.detail}\nminimized (${small.length} ops):\n` +
          `${describeOps(small)}\nreplay: deno task fuzz -- --seed=${seed} --ops=${PER_RUN}`,
      );
    }
    sqes += r.sqes;
    ops += r.ops;
    nvme += r.nvmeCommands;
    ok += r.outcomes.get("ok") ?? 0;
    for (const k of r.outcomes.keys()) errnos.add(k);
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(`${sqes} SQEs in ${ops} operations, ${nvme} NVMe commands, ${secs.toFixed(1)} s`);
  // The mix must keep reaching real I/O and a spread of errors on both variants.
  assert.ok(ok > sqes / 20, `only ${ok} successful CQEs`);
  assert.ok(nvme > 1000, `only ${nvme} NVMe commands`);
  assert.ok(errnos.size >= 8, `only ${errnos.size} distinct results`);
  assert.deepEqual([...variants].sort(), ["hardened", "v2"]);
});

Deno.test("fuzz: a seed generates the same operations every time (replayable)", () => {
  assert.deepEqual(generate(77, 2000), generate(77, 2000));
  assert.notDeepEqual(generate(77, 2000), generate(78, 2000));
  const a = execute(77, generate(77, 2000), configFor(77));
  const b = execute(77, generate(77, 2000), configFor(77));
  assert.equal(a.failure, null);
  assert.deepEqual([a.sqes, a.cqes, [...a.outcomes]], [b.sqes, b.cqes, [...b.outcomes]]);
});
