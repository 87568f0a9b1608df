/**
 * The device-rate benchmark: a short run of the C controller on memory media
 * with the minimal TypeScript host, checked against the device's own counters.
 */

import assert from "node:assert/strict";
import { nvmeEmuUnavailable } from "../../ffi/nvme_emu.ts";
import {
  deviceRateDetail,
  deviceRateLine,
  main,
  measureDeviceRate,
} from "../../bench/device_rate.ts";

const why = nvmeEmuUnavailable();
if (why !== null) console.log(`device_rate_test: skipped: libnvme_emu unavailable: ${why}`);

Deno.test({
  name: "device rate: 0.3 s of qd 32 4k reads on memory media, host and device counts agree",
  ignore: why !== null,
  fn: () => {
    const r = measureDeviceRate({ media: "memory", qd: 32, seconds: 0.3 });
    console.log(deviceRateLine(r));
    console.log(deviceRateDetail(r));
    assert.ok(r.reads > 0, "some reads completed");
    assert.equal(r.errors, 0);
    assert.equal(r.deviceErrors, 0, "the device counted no failed completion");
    // The device's Read counter (successful Reads) is the host's completion count.
    assert.equal(r.deviceReads, r.reads);
    assert.equal(r.deviceBytesRead, r.reads * 4096);
    assert.ok(r.busyNs > 0, "device busy time accounted");
    assert.ok(r.elapsedSec >= 0.3, `ran ${r.elapsedSec} s`);
    // Busy time is a part of the wall time, so the busy rate is at least the wall rate;
    // an accounting that overcounted busy time (or counted it twice) fails here.
    assert.ok(r.busyNs / 1e9 <= r.elapsedSec, `busy ${r.busyNs} ns > wall ${r.elapsedSec} s`);
    assert.ok(
      r.readsPerSecBusy >= r.readsPerSecWall,
      `${r.readsPerSecBusy} reads/s busy < ${r.readsPerSecWall} reads/s wall`,
    );
    // Memory media: no media file, so no media I/O either way.
    assert.equal(r.mediaDirect, 0);
    assert.equal(r.mediaBounced, 0);
    // Every handler call followed a raised vector.
    assert.ok(r.interrupts > 0 && r.interrupts <= r.irqs);
    assert.match(deviceRateLine(r), /^device \(C, thread\) 4k random reads, qd=32, media=memory: /);
    assert.match(deviceRateLine(r), /, 0 errors$/);
  },
});

Deno.test({
  name: "device rate: file media in a temporary directory that is removed after",
  ignore: why !== null,
  fn: () => {
    const parent = Deno.makeTempDirSync({ dir: "/var/tmp", prefix: "devrate-test-" });
    try {
      const r = measureDeviceRate({ media: "file", mediaDir: parent, qd: 4, seconds: 0.1 });
      assert.ok(r.reads > 0);
      assert.equal(r.deviceReads, r.reads);
      assert.equal(r.mediaDirect + r.mediaBounced, r.reads, "one media I/O per 4k read");
      assert.deepEqual([...Deno.readDirSync(parent)], [], "the media directory is gone");
    } finally {
      Deno.removeSync(parent, { recursive: true });
    }
  },
});

Deno.test({
  name: "device rate: 16k reads go through a PRP list and complete",
  ignore: why !== null,
  fn: () => {
    const r = measureDeviceRate({ media: "memory", qd: 4, seconds: 0.05, bs: 16384 });
    assert.ok(r.reads > 0);
    assert.equal(r.deviceReads, r.reads);
    assert.equal(r.deviceBytesRead, r.reads * 16384, "four pages per read");
    assert.match(deviceRateLine(r), /16k random reads, qd=4/);
  },
});

Deno.test("device rate: bad options are refused before anything runs", () => {
  assert.throws(() => measureDeviceRate({ media: "memory", qd: 0, seconds: 1 }), RangeError);
  assert.throws(() => measureDeviceRate({ media: "memory", qd: 4, seconds: 0 }), RangeError);
  assert.throws(
    () => measureDeviceRate({ media: "memory", qd: 4, seconds: 1, bs: 1000 }),
    RangeError,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => measureDeviceRate({ media: "tape" as any, qd: 4, seconds: 1 }),
    RangeError,
  );
  const err = console.error;
  const lines: string[] = [];
  console.error = (s: string) => lines.push(s);
  try {
    assert.equal(main(["--media=tape"]), 2);
    assert.equal(main(["--qd=x"]), 2);
    assert.equal(main(["--bogus"]), 2);
  } finally {
    console.error = err;
  }
  assert.match(lines[0], /--media: tape/);
  assert.match(lines[1], /--qd: x/);
});
