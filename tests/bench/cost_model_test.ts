/**
 * The kernel cost model: counts split by side, a cost table that prices every
 * counter (or says why not), a fit that the stored table reproduces, and the
 * model against the published QD1 cells.
 */

import assert from "node:assert/strict";
import { openTestbed } from "../../mod.ts";
import {
  COST_TABLE,
  type CostTable,
  modelCost,
  validateCostTable,
} from "../../bench/cost_model.ts";
import {
  CHECK_SIZES,
  fit,
  FIT_SIZES,
  modelled,
  nnls,
  observations,
  simCounts,
} from "../../bench/fit_costs.ts";
import { applyProbe, evalProbe } from "../../bench/measure_costs.ts";
import { runWorkload } from "../../bench/workload.ts";
import { COUNTER_NAMES, Stats } from "../../sim/stats.ts";

Deno.test("stats: events in a completion() call are counted on the completion side", () => {
  const s = new Stats({ timing: false });
  const before = s.snapshot();
  s.add("pagesPinned", 4);
  s.completion(() => {
    s.add("pagesUnpinned", 4);
    s.completion(() => s.add("iovaFrees"));
  });
  s.add("iovaAllocs");
  const d = Stats.bySide(Stats.diff(before, s.snapshot()));
  assert.equal(d.submission.pagesPinned, 4);
  assert.equal(d.completion.pagesPinned, 0);
  assert.equal(d.completion.pagesUnpinned, 4);
  assert.equal(d.submission.pagesUnpinned, 0);
  assert.equal(d.completion.iovaFrees, 1);
  assert.equal(d.submission.iovaAllocs, 1);
  assert.equal(s.onCompletionSide, false);
});

Deno.test("workload: 16k none under strict, per side: mapping before the doorbell, unmapping after", () => {
  using tb = openTestbed({ backend: "sim", seed: 2, iommu: "strict", dmaDebug: false });
  const r = runWorkload(tb, {
    path: "none",
    bs: 16384,
    qd: 1,
    rw: "randread",
    ios: 50,
    seed: 2,
    regionBytes: 8 << 20,
  }, "strict");
  const { submission: s, completion: c } = r.perIoBySide!;
  assert.deepEqual(
    [s.enterCalls, s.sqesConsumed, s.pagesPinned, s.sgEntries, s.iovaAllocs, s.iommuPteWrites],
    [1, 1, 4, 4, 1, 4],
  );
  assert.deepEqual(
    [s.pagesUnpinned, s.iovaFrees, s.iommuPteClears, s.iotlbInvalidations, s.cqesPosted],
    [0, 0, 0, 0, 0],
  );
  assert.deepEqual(
    [c.enterCalls, c.pagesUnpinned, c.iovaFrees, c.iommuPteClears, c.iotlbInvalidations],
    [1, 4, 1, 4, 1],
  );
  assert.equal(c.cqesPosted, 1);
  assert.deepEqual([c.pagesPinned, c.iovaAllocs, c.iommuPteWrites], [0, 0, 0]);
  // The model is computed from these counts, so slat counts only the submission side.
  assert.deepEqual(r.model, modelCost(r.perIoBySide!));
  assert.ok(r.model!.cpu_ns > r.model!.slat_ns);
});

Deno.test("cost table: every counter priced or listed as uncosted, at most six free parameters", () => {
  assert.deepEqual(validateCostTable(COST_TABLE), []);
  for (const n of COUNTER_NAMES) {
    assert.ok(n in COST_TABLE.events || n in COST_TABLE.uncosted, n);
  }
});

Deno.test("cost table: validation catches a counter left out, a seventh parameter, a bad cost", () => {
  const t: CostTable = structuredClone(COST_TABLE);
  delete t.events.pagesPinned;
  t.fitted.extra = { ns: 1, what: "x" };
  t.events.bioMerges = { cost: "extra", what: "x" };
  t.measured.call.ns = -1;
  t.events.bogus = { cost: "nowhere", what: "x" };
  const p = validateCostTable(t).join("\n");
  assert.match(p, /counter pagesPinned is neither priced/);
  assert.match(p, /7 free parameters/);
  assert.match(p, /cost call: -1/);
  assert.match(p, /bogus is not a counter/);
  assert.match(p, /event bogus: unknown cost nowhere/);
  assert.match(p, /cost pin prices no event/);
});

Deno.test("nnls: exact on a consistent system, zero where a column would go negative", () => {
  const A = [[1, 0], [0, 1], [1, 1]];
  assert.deepEqual(nnls(A, [2, 3, 5]).x.map((v) => Math.round(v * 1e9) / 1e9), [2, 3]);
  const r = nnls([[1, 1], [1, 2]], [1, 0]); // unconstrained: x = [2, -1]
  assert.equal(r.x[1], 0);
  assert.ok(Math.abs(r.x[0] - 0.5) < 1e-9);
});

Deno.test("measure: probe expressions, and a missing probe value is named", () => {
  const out = { nop_batch1: 1500, nop_batch32: 100, alloc_free: 12 };
  assert.equal(evalProbe("nop_batch1 - nop_batch32", out), 1400);
  assert.equal(evalProbe("alloc_free / 2", out), 6);
  assert.throws(() => evalProbe("store64", out), /printed no 'store64'/);
  const probe = Object.fromEntries(
    ["nop_batch32", "store64", "sg_fill", "bvec_fill", "memcpy_byte", "memset_byte"]
      .concat(["handshake", "call"]).map((k) => [k, 2]),
  );
  const t = applyProbe(COST_TABLE, { ...probe, alloc_free: 10 }, "2000-01-01");
  assert.equal(t.measured.slab_op.ns, 5);
  assert.equal(t.measured.sqe.ns, 2);
  assert.equal(t.measuredBy.date, "2000-01-01");
});

// One sim run shared by the fit tests below (about 2 s).
const counts = simCounts([...FIT_SIZES, ...CHECK_SIZES]);

Deno.test("fit: the stored free parameters are what deno task costs:fit computes", () => {
  const refit = fit(COST_TABLE, observations(FIT_SIZES, counts));
  for (const k of Object.keys(COST_TABLE.fitted)) {
    assert.ok(
      Math.abs(refit.fitted[k].ns - COST_TABLE.fitted[k].ns) <= 0.051,
      `${k}: table ${COST_TABLE.fitted[k].ns}, fit ${refit.fitted[k].ns}: run deno task costs:fit`,
    );
  }
});

Deno.test("model: every published QD1 slat within 20%, the 16k cells unfitted", () => {
  for (const o of observations([...FIT_SIZES, ...CHECK_SIZES], counts)) {
    if (o.metric !== "slat") continue;
    const ratio = modelled(COST_TABLE, o) / o.published;
    assert.ok(
      ratio >= 0.8 && ratio <= 1.2,
      `${o.cell.bs} ${o.cell.path}: model/published ${ratio.toFixed(3)}`,
    );
  }
});

Deno.test("model: dma slat flat across sizes, bvec and none grow, from the counts", () => {
  const slat = (bs: number, path: string) => modelCost(counts.get(`${bs}/${path}`)!).slat_ns;
  const dma = [4096, 16384, 65536].map((bs) => slat(bs, "dma"));
  assert.ok(Math.max(...dma) - Math.min(...dma) < 0.05 * dma[0], `dma ${dma}`);
  for (const p of ["bvec", "none"]) {
    const s = [4096, 16384, 65536].map((bs) => slat(bs, p));
    assert.ok(s[0] < s[1] && s[1] < s[2], `${p} ${s}`);
    assert.ok(s[2] > 2 * dma[2], `${p} 64k ${s[2]} vs dma ${dma[2]}`);
  }
});

const PROBE = new URL("../../ffi/native/build/cost_probe", import.meta.url).pathname;
let probeMissing: string | null = null;
try {
  Deno.statSync(PROBE);
} catch {
  probeMissing = `${PROBE} not built (deno task build needs gcc and liburing)`;
  console.log(`SKIP cost_probe test: ${probeMissing}`);
}

Deno.test({
  name: "cost_probe: prints every value the measured entries derive from; bad rounds refused",
  ignore: probeMissing !== null,
  fn() {
    const r = new Deno.Command(PROBE, { args: ["--rounds=1"], stdout: "piped" }).outputSync();
    assert.equal(r.code, 0);
    const out = JSON.parse(new TextDecoder().decode(r.stdout)) as Record<string, number>;
    for (const [k, m] of Object.entries(COST_TABLE.measured)) {
      const v = evalProbe(m.probe, out);
      assert.ok(Number.isFinite(v) && v > 0, `${k} = ${v} from ${m.probe}`);
    }
    const bad = new Deno.Command(PROBE, { args: ["--rounds=0"], stderr: "piped" }).outputSync();
    assert.equal(bad.code, 1);
    assert.match(new TextDecoder().decode(bad.stderr), /bad argument --rounds=0/);
  },
});
