/**
 * Honest statistics: --repeat's spread (min/median/max), the not-significant
 * mark where two paths' ranges overlap, p99.9 only from 10,000 samples, and
 * JSON figures rounded to what they mean.
 */

import assert from "node:assert/strict";
import { combineRepeats, iopsVersusOthers, overlaps, spreadOf } from "../../bench/repeat.ts";
import { P999_MIN_SAMPLES, summarize, type WorkloadRecord } from "../../bench/workload.ts";
import { summaryTable } from "../../bench/report.ts";

function rec(path: "none" | "bvec" | "dma", iops: number, slat = 1000): WorkloadRecord {
  const lat = { mean: slat, p50: slat, p99: slat, p999: null, samples: 100 };
  return {
    backend: "sim",
    path,
    bs: 4096,
    qd: 1,
    rw: "randread",
    iommu: "lazy",
    premap: "v2",
    ios: 100,
    target: "/dev/nvme0n1",
    iops,
    slat: lat,
    clat: { ...lat },
    cpuNsPerIo: 500,
    perIo: null,
    perIoBySide: null,
    model: null,
    stageNsPerIo: null,
    verified: true,
    dataChecked: true,
  };
}

Deno.test("spread: min, median (lower middle), max", () => {
  assert.deepEqual(spreadOf([3, 1, 2]), { min: 1, median: 2, max: 3 });
  assert.deepEqual(spreadOf([4, 1, 3, 2]), { min: 1, median: 2, max: 4 });
  assert.throws(() => spreadOf([]), /no values/);
});

Deno.test("repeat: the median-IOPS run carries the spread of every figure", () => {
  const c = combineRepeats([rec("dma", 300, 10), rec("dma", 100, 30), rec("dma", 200, 20)]);
  assert.equal(c.iops, 200);
  assert.equal(c.slat.mean, 20);
  assert.deepEqual(c.spread!.iops, { min: 100, median: 200, max: 300 });
  assert.deepEqual(c.spread!.slatMean, { min: 10, median: 20, max: 30 });
  assert.equal(c.spread!.runs, 3);
});

Deno.test("significance: overlapping ranges are n.s., separate ones show the difference", () => {
  assert.ok(overlaps({ min: 1, median: 2, max: 3 }, { min: 3, median: 4, max: 5 }));
  assert.ok(!overlaps({ min: 1, median: 2, max: 3 }, { min: 4, median: 5, max: 6 }));
  const dma = combineRepeats([rec("dma", 120), rec("dma", 125), rec("dma", 130)]);
  const bvec = combineRepeats([rec("bvec", 100), rec("bvec", 104), rec("bvec", 110)]);
  const none = combineRepeats([rec("none", 95), rec("none", 122), rec("none", 105)]);
  const all = [none, bvec, dma];
  assert.equal(iopsVersusOthers(dma, all), "none n.s., bvec +20%");
  assert.equal(iopsVersusOthers(bvec, all), "none n.s., dma -17%");
  const table = summaryTable(all);
  assert.match(table, /125 \[120-130\]/);
  assert.match(table, /n\.s\.: the two paths' IOPS ranges over the repeats overlap/);
  assert.equal(iopsVersusOthers(rec("dma", 1), all), "", "no repeats, no mark");
  assert.doesNotMatch(summaryTable([rec("dma", 1)]), /IOPS vs other paths/);
});

Deno.test("latency: p99.9 only with 10,000 samples behind it; figures to the ns", () => {
  const few = summarize(Array.from({ length: P999_MIN_SAMPLES - 1 }, (_, i) => i + 0.4));
  assert.equal(few.p999, null);
  assert.equal(few.samples, P999_MIN_SAMPLES - 1);
  const many = summarize(Array.from({ length: P999_MIN_SAMPLES }, (_, i) => i + 0.4));
  assert.equal(many.p999, 9990);
  assert.ok(Number.isInteger(many.mean) && Number.isInteger(many.p50));
  assert.match(summaryTable([rec("dma", 1)]), /'-' where fewer than 10,000 I\/Os/);
});

Deno.test("bench --repeat=2: JSON records carry the spread, rounded figures", async () => {
  const json = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const r = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../../bench/bench.ts", import.meta.url).pathname]
        .concat(["--path=bvec,dma", "--bs=16k", "--qd=1", "--ios=40", "--iommu=lazy"])
        .concat(["--repeat=2", `--json=${json}`]),
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    const { records } = JSON.parse(Deno.readTextFileSync(json));
    assert.equal(records.length, 2);
    for (const x of records) {
      assert.equal(x.spread.runs, 2);
      assert.ok(
        x.spread.iops.min <= x.spread.iops.median && x.spread.iops.median <= x.spread.iops.max,
      );
      assert.ok(Number.isInteger(x.iops) && Number.isInteger(x.slat.mean));
      assert.equal(x.clat.p999, null);
      for (const v of Object.values(x.perIo) as number[]) {
        assert.equal(Math.round(v * 1e4) / 1e4, v);
      }
    }
    assert.match(new TextDecoder().decode(r.stdout), /IOPS vs other paths/);
  } finally {
    Deno.removeSync(json);
  }
});
