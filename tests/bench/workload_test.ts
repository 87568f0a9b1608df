/**
 * The workload runner, the demo's summary and the CLI: exact per-I/O counts
 * for each buffer path on the sim backend, verification that can fail, and
 * flag errors that name the flag.
 */

import assert from "node:assert/strict";
import { openTestbed, realBackendUnavailable } from "../../mod.ts";
import { realNvmeUnavailable } from "../../ffi/testbed.ts";
import { runWorkload, WorkloadError } from "../../bench/workload.ts";
import { parseRunArgs, parseSize, type RunOptions, UsageError } from "../../bench/cli.ts";
import { perIoTable } from "../../bench/report.ts";
import { skippedSentence } from "../../examples/demo.ts";

const base = { qd: 4, ios: 64, seed: 3, regionBytes: 8 << 20 } as const;

Deno.test("workload: per-I/O counts of none, bvec and dma at 16k under a strict IOMMU", () => {
  using tb = openTestbed({ backend: "sim", seed: 3, iommu: "strict" });
  const none = runWorkload(tb, { ...base, path: "none", bs: 16384, rw: "randread" }, "strict");
  const bvec = runWorkload(tb, { ...base, path: "bvec", bs: 16384, rw: "randread" }, "strict");
  const dma = runWorkload(tb, { ...base, path: "dma", bs: 16384, rw: "randread" }, "strict");
  for (const r of [none, bvec, dma]) assert.equal(r.verified, true, `${r.path} not verified`);
  // none: pin 4 pages, 4 bvecs, one sg list of 4, one IOVA range, 4 PTEs mapped and cleared.
  assert.equal(none.perIo!.pagesPinned, 4);
  assert.equal(none.perIo!.bioVecs, 4);
  assert.equal(none.perIo!.sgEntries, 4);
  assert.equal(none.perIo!.dmaMapSgCalls, 1);
  assert.equal(none.perIo!.iovaAllocs, 1);
  assert.equal(none.perIo!.iommuPteWrites, 4);
  assert.equal(none.perIo!.iommuPteClears, 4);
  assert.equal(none.perIo!.iotlbInvalidations, 1);
  // bvec: registered pages, nothing pinned per I/O, the same DMA work.
  assert.equal(bvec.perIo!.pagesPinned, 0);
  assert.equal(bvec.perIo!.sgEntries, 4);
  assert.equal(bvec.perIo!.dmaMapSgCalls, 1);
  assert.equal(bvec.perIo!.iommuPteWrites, 4);
  // dma: no scatterlist, no DMA API call, no IOMMU work per I/O.
  for (
    const k of [
      "pagesPinned",
      "bioVecs",
      "sgEntries",
      "dmaMapSgCalls",
      "dmaMapPageCalls",
      "iovaAllocs",
      "iommuPteWrites",
      "iommuPteClears",
      "iotlbInvalidations",
      "prpPoolAllocs",
    ] as const
  ) assert.equal(dma.perIo![k], 0, `dma ${k}`);
  assert.equal(dma.perIo!.nvmeCommands, 1);
  const s = skippedSentence([none, bvec, dma]);
  assert.match(s, /scatterlist entries 4 -> 0/);
  assert.match(s, /dma_map_sg calls 1 -> 0/);
  const table = perIoTable([none, bvec, dma]);
  assert.match(table, /16k dma/);
});

Deno.test("workload: dma per-I/O work is flat from 4k to 64k while bvec grows", () => {
  using tb = openTestbed({ backend: "sim", seed: 5, iommu: "strict" });
  const sg = (path: "bvec" | "dma", bs: number) =>
    runWorkload(tb, { ...base, path, bs, rw: "randwrite" }, "strict").perIo!;
  const b4 = sg("bvec", 4096), b64 = sg("bvec", 65536);
  const d4 = sg("dma", 4096), d64 = sg("dma", 65536);
  assert.ok(b64.iommuPteWrites > b4.iommuPteWrites, "bvec IOMMU work grows with size");
  // 16 data pages per I/O; a PRP-list pool page mapped once in the run adds 1/64.
  assert.ok(b64.iommuPteWrites >= 16 && b64.iommuPteWrites <= 16 + 1 / 64, `${b64.iommuPteWrites}`);
  assert.equal(b64.sgEntries, 16);
  assert.deepEqual(
    [d4.iommuPteWrites, d4.sgEntries, d4.dmaMapPageCalls],
    [d64.iommuPteWrites, d64.sgEntries, d64.dmaMapPageCalls],
  );
  assert.equal(d64.iommuPteWrites, 0);
});

Deno.test("workload: MAP_BUFFERS refused without CAP_SYS_ADMIN is reported, not hidden", () => {
  using tb = openTestbed({ backend: "sim", capSysAdmin: false });
  assert.throws(
    () => runWorkload(tb, { ...base, path: "dma", bs: 4096, rw: "randread" }),
    (e: unknown) => e instanceof WorkloadError && /MAP_BUFFERS.*-1 \(EPERM\)/.test(e.message),
  );
});

Deno.test("workload: a driver without dma_map refuses MAP_BUFFERS with -EINVAL", () => {
  using tb = openTestbed({ backend: "sim", dmaMapSupported: false });
  assert.throws(
    () => runWorkload(tb, { ...base, path: "dma", bs: 4096, rw: "randread" }),
    (e: unknown) => e instanceof WorkloadError && /-22 \(EINVAL\)/.test(e.message),
  );
});

Deno.test("workload: verify off checks lengths only and says so in the record", () => {
  using tb = openTestbed({ backend: "sim", seed: 4 });
  const on = runWorkload(tb, { ...base, path: "bvec", bs: 4096, rw: "randread" });
  const off = runWorkload(tb, { ...base, path: "bvec", bs: 4096, rw: "randread", verify: false });
  assert.deepEqual([on.verified, on.dataChecked], [true, true]);
  assert.deepEqual([off.verified, off.dataChecked], [true, false]);
});

Deno.test("workload: region too small for the queue depth is an error", () => {
  using tb = openTestbed({ backend: "sim" });
  assert.throws(
    () =>
      runWorkload(tb, {
        ...base,
        qd: 64,
        regionBytes: 65536,
        path: "none",
        bs: 4096,
        rw: "randread",
      }),
    WorkloadError,
  );
});

const why = realBackendUnavailable();
Deno.test({
  name: "workload: live kernel none and bvec on an O_DIRECT file verify every byte",
  ignore: why !== null,
  fn() {
    // Without the emulated namespace the workload runs on a scratch file, kernel only.
    using tb = openTestbed({ backend: "real", nvme: false });
    for (const path of ["none", "bvec"] as const) {
      const w = runWorkload(tb, { ...base, path, bs: 8192, rw: "randwrite" });
      const r = runWorkload(tb, { ...base, path, bs: 8192, rw: "randread" });
      assert.equal(w.verified && r.verified, true, path);
      assert.equal(r.perIo, null);
    }
    assert.throws(
      () => runWorkload(tb, { ...base, path: "dma", bs: 4096, rw: "randread" }),
      /MAP_BUFFERS.*-22 \(EINVAL\)/,
    );
  },
});

const nvmeWhy = realNvmeUnavailable();
Deno.test({
  name: "workload: real backend's emulated namespace runs none, bvec and dma with per-I/O counts",
  ignore: nvmeWhy !== null,
  fn() {
    using tb = openTestbed({ backend: "real", iommu: "strict", mediaInMemory: true });
    for (const path of ["none", "bvec", "dma"] as const) {
      const w = runWorkload(tb, { ...base, path, bs: 16384, rw: "randwrite" }, "strict");
      const r = runWorkload(tb, { ...base, path, bs: 16384, rw: "randread" }, "strict");
      assert.equal(w.verified && r.verified, true, path);
      assert.equal(r.perIo!.iommuPteWrites, path === "dma" ? 0 : 4, path);
    }
  },
});

const DEFAULTS: RunOptions = {
  backend: "sim",
  paths: ["none"],
  bs: [4096],
  qd: [1],
  rw: ["randread"],
  iommu: ["strict"],
  ios: 10,
  seed: 1,
};

Deno.test("cli: fio-style flags parse, and each mistake names its flag", () => {
  const o = parseRunArgs(
    ["--", "--bs=4k,64K", "--qd=1,16", "--path=dma,none", "--iommu=lazy", "--ios=7"],
    DEFAULTS,
  );
  assert.deepEqual(o.bs, [4096, 65536]);
  assert.deepEqual(o.qd, [1, 16]);
  assert.deepEqual(o.paths, ["dma", "none"]);
  assert.deepEqual(o.iommu, ["lazy"]);
  assert.equal(o.ios, 7);
  assert.equal(parseSize("bs", "1m"), 1 << 20);
  assert.equal(parseRunArgs(["--verify=0"], DEFAULTS).verify, false);
  assert.equal(parseRunArgs([], DEFAULTS).verify, undefined);
  assert.equal(parseRunArgs(["--dma-debug=0"], DEFAULTS).dmaDebug, false);
  assert.equal(parseRunArgs(["--dma-debug=1"], DEFAULTS).dmaDebug, true);
  const bad: [string[], RegExp][] = [
    [["--dma-debug=yes"], /--dma-debug: 'yes'/],
    [["--bs=3k"], /--bs/],
    [["--qd=0"], /--qd/],
    [["--path=fast"], /--path: 'fast'/],
    [["--iommu=on"], /--iommu: 'on'/],
    [["--backend=qemu"], /--backend/],
    [["--ios=abc"], /--ios/],
    [["--nope"], /nope/],
    [["--rw=read"], /--rw: 'read'/],
    [["--verify=yes"], /--verify: 'yes'/],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseRunArgs(args, DEFAULTS),
      (e: unknown) => e instanceof UsageError && re.test(e.message),
    );
  }
});

Deno.test("workload: DMA exposure is 0 for none/bvec and the premapped buffers' idle bytes for dma", () => {
  using tb = openTestbed({ seed: 5, iommu: "strict", timing: false });
  const base = { qd: 4, ios: 200, seed: 3, rw: "randwrite" as const, bs: 65536 };
  const none = runWorkload(tb, { ...base, path: "none" }, "strict");
  const bvec = runWorkload(tb, { ...base, path: "bvec" }, "strict");
  const dma = runWorkload(tb, { ...base, path: "dma" }, "strict");
  assert.equal(none.exposure?.idleMappedBytesMean, 0);
  assert.equal(bvec.exposure?.idleMappedBytesMean, 0);
  // Four 64 KiB premapped slots: between 0 and all of them idle, on average more than 0.
  const m = dma.exposure!.idleMappedBytesMean;
  assert.ok(m > 0 && m <= 4 * 65536, String(m));
  assert.equal(tb.dmaMappedBytes, 0); // the job unmapped its buffers when it ended
});

Deno.test("workload: a ramp runs unmeasured and leaves the measured I/Os and their counts as they were", () => {
  for (const path of ["none", "bvec", "dma"] as const) {
    const run = (rampIos: number) => {
      using tb = openTestbed({ backend: "sim", seed: 5, iommu: "strict" });
      const before = tb.stats!.snapshot().counters.sqesConsumed;
      const r = runWorkload(tb, { ...base, path, bs: 8192, rw: "randread", rampIos }, "strict");
      return { r, sqes: (tb.stats!.snapshot().counters.sqesConsumed) - before };
    };
    const plain = run(0);
    const ramped = run(300);
    assert.equal(ramped.r.verified, true);
    assert.equal(ramped.r.ios, 64);
    // Strict: every I/O's DMA work is its own, so the per-I/O counts are exactly equal.
    assert.deepEqual(ramped.r.perIo, plain.r.perIo, path);
    // The ramp's 300 I/Os did run (one SQE each), outside the measured window.
    assert.equal(ramped.sqes - plain.sqes, 300, path);
  }
});

Deno.test("cli: --ramp takes a count or 0 and names itself when wrong", () => {
  const d: RunOptions = {
    backend: "sim",
    paths: ["dma"],
    bs: [4096],
    qd: [1],
    rw: ["randread"],
    iommu: ["lazy"],
    ios: 100,
    seed: 1,
  };
  assert.equal(parseRunArgs(["--ramp=0"], d).rampIos, 0);
  assert.equal(parseRunArgs(["--ramp=5000"], d).rampIos, 5000);
  assert.equal(parseRunArgs([], d).rampIos, undefined);
  assert.throws(() => parseRunArgs(["--ramp=lots"], d), (e: Error) => /--ramp/.test(e.message));
  assert.throws(() => parseRunArgs(["--ramp=-1"], d), (e: Error) => /--ramp/.test(e.message));
});
