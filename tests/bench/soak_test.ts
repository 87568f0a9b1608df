/**
 * A short slice of the integrity campaign (bench/soak.ts) on each backend:
 * every byte read matches the shadow except where the posted code's
 * bounce-buffer syncs explain it, and hardened moves no byte outside a
 * mapping.
 */
import assert from "node:assert/strict";
import { runSoak, segmentFailed, type SoakOptions } from "../../bench/soak.ts";
import { realNvmeUnavailable } from "../../mod.ts";

function slice(backend: "sim" | "real"): SoakOptions {
  return {
    backend,
    ios: 2400,
    seed: 7,
    iommu: ["strict", "bounce"],
    premap: ["v2", "v3", "hardened"],
    lba: [512, 4096],
    qd: 8,
  };
}

function check(o: SoakOptions): void {
  const segs = runSoak(o);
  assert.equal(segs.length, 12);
  for (const s of segs) {
    const tag = `${s.iommu}/${s.premap}/${s.lba}`;
    assert.equal(segmentFailed(s), false, `${tag}: ${JSON.stringify(s)}`);
    assert.equal(s.ios, 200, tag);
    assert.ok(s.byPath.none > 0 && s.byPath.bvec > 0 && s.byPath.dma > 0, tag);
    assert.deepEqual(s.errors, {}, tag);
    if (s.premap === "hardened" || s.iommu !== "bounce") {
      assert.equal(s.mismatchedBytes, 0, `${tag}: ${s.firstMismatches.join("; ")}`);
    }
    if (s.premap === "hardened") {
      assert.equal(s.checks.deviceUnmappedBytes, 0, tag);
      assert.equal(s.checks.dmaDebugErrors, 0, tag);
    }
  }
  // The posted code's bounce syncs lose data in this slice: the campaign sees it.
  const posted = segs.filter((s) => s.postedFlaw);
  assert.ok(posted.some((s) => s.mismatchedBytes > 0));
}

Deno.test("soak slice (sim): 2,400 verified I/Os over 12 segments", () => check(slice("sim")));

Deno.test({
  name: "soak slice (real): the same on the C controller",
  ignore: realNvmeUnavailable() !== null,
  fn: () => check(slice("real")),
});
