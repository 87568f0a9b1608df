/**
 * CI slice of the lifecycle fuzzer (`tests/fuzz/lifecycle.ts`; `deno task
 * fuzz -- --lifecycle` runs longer): unmap, unregister, update, slot
 * replacement, close and teardown while premapped and ordinary I/O is in
 * flight, on v2, v3 and hardened, every byte checked against a shadow.
 *
 * Size: LIFECYCLE_OPS (default 60000); first seed: LIFECYCLE_SEED (default 1).
 */

import assert from "node:assert/strict";
import { type LcConfig, lcConfigFor, lcExecute, lcGenerate, lcMinimize } from "./lifecycle.ts";

const want = Number(Deno.env.get("LIFECYCLE_OPS") ?? "60000");
const firstSeed = Number(Deno.env.get("LIFECYCLE_SEED") ?? "1");
const PER_RUN = 2000;

Deno.test(`lifecycle fuzz: ${want} operations on v2, v3 and hardened`, () => {
  const t0 = performance.now();
  const by = new Map<string, { ios: number; raced: number; flawed: number; modes: Set<string> }>();
  let ops = 0;
  for (let seed = firstSeed; ops < want; seed++) {
    const cfg: LcConfig = lcConfigFor(seed);
    const list = lcGenerate(seed, PER_RUN);
    const r = lcExecute(seed, list, cfg);
    if (r.failure) {
      const small = lcMinimize(seed, list.slice(0, r.failure.op + 1), cfg, r.failure.invariant);
      assert.fail(
        `seed ${seed} (${cfg.premap}, iommu ${cfg.iommu}): ${r.failure.invariant} at op ` +
          `${r.failure.op}: ${r.failure.detail}\nminimized (${small.length} ops):\n` +
          small.map((o, i) => `  ${i}: ${JSON.stringify(o)}`).join("\n") +
          `\nreplay: deno task fuzz -- --lifecycle --seed=${seed} --ops=${PER_RUN} --per-run=${PER_RUN}`,
      );
    }
    ops += PER_RUN;
    const b = by.get(cfg.premap) ?? { ios: 0, raced: 0, flawed: 0, modes: new Set() };
    b.ios += r.ios;
    b.raced += r.raced;
    b.flawed += r.flawed;
    b.modes.add(cfg.iommu);
    by.set(cfg.premap, b);
  }
  const secs = (performance.now() - t0) / 1000;
  for (const [v, b] of by) {
    console.log(
      `${v}: ${b.ios} I/Os, ${b.raced} raced a lifecycle event, ${b.flawed} flawed (shown), ` +
        `iommu ${[...b.modes].join("/")}`,
    );
  }
  console.log(`${ops} operations, ${secs.toFixed(1)} s`);
  assert.deepEqual([...by.keys()].sort(), ["hardened", "v2", "v3"]);
  for (const b of by.values()) {
    assert.ok(b.raced > 100, "lifecycle events must land while I/O is in flight");
  }
  // The posted code's flaw must actually be reached (and shown), or the fuzzer tests nothing.
  assert.ok(by.get("v2")!.flawed > 0, "v2: no I/O hit the posted lifetime flaw");
  assert.ok(by.get("v3")!.flawed > 0, "v3: no I/O hit the posted lifetime flaw");
  assert.equal(by.get("hardened")!.flawed, 0);
});
