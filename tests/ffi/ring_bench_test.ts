/** The C reference under ASan/UBSan, and the Deno NOP loop of bench/ring.ts. */
import assert from "node:assert/strict";
import { denoNopLoop, formatTable, runRingBench } from "../../bench/ring.ts";
import { ignore, newRing } from "./_live.ts";

const ASAN = new URL("../../ffi/native/build/ring_bench-asan", import.meta.url).pathname;
let asanWhy: string | null = ignore ? "live io_uring unavailable" : null;
try {
  Deno.statSync(ASAN);
} catch {
  asanWhy ??= `${ASAN} not built (deno task build; needs gcc and liburing-dev)`;
}
if (asanWhy !== null) console.log(`SKIP ring_bench tests: ${asanWhy}`);

Deno.test({
  name: "ring_bench-asan: a few thousand NOPs, clean exit, exact op count",
  ignore: asanWhy !== null,
  fn: async () => {
    for (const batch of [1, 7, 32]) {
      const out = await new Deno.Command(ASAN, {
        args: [`--batch=${batch}`, "--ops=3000"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, err);
      assert.equal(err, "");
      const j = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.equal(j.ops, 3000);
      assert.ok(j.ns > 0 && j.ops_per_s > 0);
    }
    const bad = await new Deno.Command(ASAN, { args: ["--batch=0"], stderr: "piped" }).output();
    assert.equal(bad.code, 1);
    assert.match(new TextDecoder().decode(bad.stderr), /--batch must be in \[1, 4096\]/);
  },
});

Deno.test({
  name: "denoNopLoop completes exactly `ops` NOPs and leaves both rings empty",
  ignore,
  fn: () => {
    using ring = newRing(8);
    const ns = denoNopLoop(ring, 8, 1003);
    assert.ok(ns > 0);
    assert.equal(ring.sqPending, 0);
    assert.equal(ring.cqReady(), 0);
    assert.equal(ring.sqKhead[0], 1003);
    assert.equal(ring.cqKhead[0], 1003);
    assert.throws(() => denoNopLoop(ring, 16, 10), RangeError);
  },
});

Deno.test({
  name: "denoNopLoop writes whole SQEs (prep_nop + set_data64) over stale bytes, across the wrap",
  ignore,
  fn: () => {
    using ring = newRing(8);
    ring.sqeBytes.fill(0xee); // a field the loop skipped would show
    denoNopLoop(ring, 8, 21); // SQEs 0..20: the last lap leaves 13..15 in slots 5..7, 16..20 in 0..4
    for (let slot = 0; slot < 8; slot++) {
      const ud = slot < 5 ? 16 + slot : 8 + slot;
      assert.deepEqual(
        [...new Int32Array(ring.sqeBytes.buffer, slot * 64, 16)],
        [0, -1, 0, 0, 0, 0, 0, 0, ud, 0, 0, 0, 0, 0, 0, 0],
        `slot ${slot}`,
      );
    }
    assert.equal(ring.sqPending, 0);
    assert.equal(ring.flushSq(), 0, "liburing's sqe_head and sqe_tail written back");
  },
});

Deno.test({
  name: "runRingBench produces one record per batch and a summary",
  ignore: asanWhy !== null,
  fn: async () => {
    const rep = await runRingBench([1, 4], 2000, 1, (b) => b * 1000);
    assert.deepEqual(rep.records.map((r) => r.batch), [1, 4]);
    assert.deepEqual(rep.records.map((r) => r.sim_ops_per_s), [1000, 4000]);
    for (const r of rep.records) {
      assert.ok(r.ts_ops_per_s > 0 && r.c_ops_per_s > 0);
      assert.equal(r.ratio, Number((r.ts_ops_per_s / r.c_ops_per_s).toFixed(3)));
    }
    assert.equal(rep.summary.min_ratio, Math.min(...rep.records.map((r) => r.ratio)));
    assert.match(formatTable(rep), /batch +deno ops\/s +C ops\/s +ratio +sim ops\/s/);
  },
});

Deno.test("bench:ring summary names the figure the target applies to and the batch that decides", () => {
  const rep = {
    summary: {
      ops: 1000,
      repeat: 3,
      batches: [1, 8],
      min_ratio: 0.85,
      geomean_ratio: 0.9,
      target_ratio: 0.9,
      meets_target: false,
    },
    records: [
      { batch: 1, ts_ops_per_s: 85, c_ops_per_s: 100, ratio: 0.85 },
      { batch: 8, ts_ops_per_s: 95, c_ops_per_s: 100, ratio: 0.95 },
    ],
  };
  const last = formatTable(rep).split("\n").at(-1)!;
  assert.match(
    last,
    /^target: every batch's deno\/C ratio >= 0\.9; lowest 0\.850 \(batch 1\): NOT met/,
  );
  rep.summary.meets_target = true;
  assert.match(formatTable(rep), /\(batch 1\): met;/);
});
