/**
 * Every device fault kind, end to end on both backends (issue 11, point 1):
 * an application's READ_FIXED/WRITE_FIXED meets the fault, and the test shows
 * its CQE, the driver's retries, timeouts, aborts and resets, and the data
 * afterwards. The host stack is the same TypeScript nvme driver on both; the
 * controller is the TS one on sim and the C one on real. Timeouts run on the
 * virtual clock on sim and on CLOCK_MONOTONIC on real (io_timeout 200 ms).
 */
import assert from "node:assert/strict";
import {
  type Backend,
  IOSQE,
  O,
  openTestbed,
  realNvmeUnavailable,
  type Testbed,
  type TestbedOptions,
} from "../../mod.ts";
import type { NvmeFaultRule } from "../../sim/device/faults.ts";
import { Errno } from "../../sim/uapi/errno.ts";

const BLOCK = 4096;
const LEN = 16384;
const POS = 1n << 20n;
const SLBA = POS / BigInt(BLOCK);

const realWhy = realNvmeUnavailable();

interface Outcome {
  res: number;
  counts: Record<string, number>;
  data: Uint8Array;
}

function counters(tb: Testbed): Record<string, number> {
  const c = tb.stats!.counters as Record<string, number>;
  return {
    retries: c.nvmeRetries,
    timeouts: c.nvmeTimeouts,
    aborts: c.nvmeAborts,
    resets: c.nvmeResets,
    invalid: c.nvmeInvalidCompletions,
  };
}

/**
 * Open, write `old` at POS cleanly, add `rule`, run one `dir` I/O of `fresh`
 * (or into a zeroed buffer), then read POS back with no fault: the CQE, the
 * counters the faulted I/O moved, and what the namespace holds afterwards.
 */
function run(
  backend: Backend,
  rule: NvmeFaultRule,
  dir: "read" | "write",
  extra: TestbedOptions = {},
): Outcome & { buf: Uint8Array; old: Uint8Array; fresh: Uint8Array } {
  using tb = openTestbed({
    backend,
    seed: 11,
    iommu: "strict",
    premap: "hardened",
    namespaces: [{ lbaSize: 4096, sizeBytes: 16n << 20n }],
    hostLimits: { ioTimeoutNs: backend === "sim" ? undefined : 200e6 },
    ...(backend === "real" ? { mediaInMemory: true } : {}),
    ...extra,
  });
  const ring = tb.ring({ entries: 8 });
  const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
  assert.ok(ring.registerFiles([fd]).ok);
  const buf = tb.allocBuffer(LEN);
  assert.ok(ring.registerBuffers([{ addr: buf.addr, len: LEN }]).ok);
  assert.ok(ring.mapBuffers(0, 0, 1).ok);
  const io = (w: boolean) => {
    const o = { flags: IOSQE.FIXED_FILE, userData: 1n };
    if (w) ring.writeFixed(0, buf.addr, LEN, POS, 0, o);
    else ring.readFixed(0, buf.addr, LEN, POS, 0, o);
    return ring.submitAndReap(1)[0].res;
  };
  const old = new Uint8Array(LEN).map((_, i) => (i * 7 + 1) & 0xff);
  const fresh = new Uint8Array(LEN).map((_, i) => (i * 13 + 5) & 0xff);
  buf.bytes.set(old);
  assert.equal(io(true), LEN);
  tb.nvmeFaults!.add(rule);
  const before = counters(tb);
  if (dir === "write") buf.bytes.set(fresh);
  else buf.bytes.fill(0);
  const res = io(dir === "write");
  const after = counters(tb);
  const counts = Object.fromEntries(
    Object.keys(after).map((k) => [k, after[k] - before[k]]),
  );
  const got = buf.bytes.slice();
  tb.nvmeFaults!.clear();
  buf.bytes.fill(0);
  assert.equal(io(false), LEN);
  const data = buf.bytes.slice();
  assert.ok(ring.unmapBuffers(0, 0, 1).ok);
  ring[Symbol.dispose]();
  tb.close(fd);
  return { res, counts, data, buf: got, old, fresh };
}

const ZERO = { retries: 0, timeouts: 0, aborts: 0, resets: 0, invalid: 0 };

for (const backend of ["sim", "real"] as const) {
  const ignore = backend === "real" && realWhy !== null;
  const t = (name: string, fn: () => void) =>
    Deno.test({ name: `faults ${backend}: ${name}`, ignore, fn });

  t("an Unrecovered Read Error once: retried, the CQE is full, the data read", () => {
    const r = run(
      backend,
      { kind: "read-error", slbaFirst: SLBA, slbaLast: SLBA, count: 1 },
      "read",
    );
    assert.equal(r.res, LEN);
    assert.deepEqual(r.counts, { ...ZERO, retries: 1 });
    assert.deepEqual(r.buf, r.old);
  });

  t("an Unrecovered Read Error with DNR: -ENODATA, no retry, nothing read", () => {
    const r = run(backend, { kind: "read-error", slbaFirst: SLBA, count: 1, dnr: true }, "read");
    assert.equal(r.res, -Errno.ENODATA);
    assert.deepEqual(r.counts, ZERO);
    assert.deepEqual(r.buf, new Uint8Array(LEN));
    assert.deepEqual(r.data, r.old);
  });

  t(
    "a Write Fault five times and more: retried to nvme_max_retries, then -ENODATA; media unchanged",
    () => {
      const r = run(backend, { kind: "write-fault", slbaFirst: SLBA, slbaLast: SLBA }, "write");
      assert.equal(r.res, -Errno.ENODATA);
      assert.deepEqual(r.counts, { ...ZERO, retries: 5 });
      assert.deepEqual(r.data, r.old);
    },
  );

  t("a Write Fault once: retried, the new data on the media", () => {
    const r = run(backend, { kind: "write-fault", slbaFirst: SLBA, count: 1 }, "write");
    assert.equal(r.res, LEN);
    assert.deepEqual(r.counts, { ...ZERO, retries: 1 });
    assert.deepEqual(r.data, r.fresh);
  });

  t("a dropped command: Abort at the first timeout, reset at the second, retried", () => {
    const r = run(backend, { kind: "drop", count: 1 }, "write");
    assert.equal(r.res, LEN);
    assert.deepEqual(r.counts, { ...ZERO, retries: 1, timeouts: 2, aborts: 1, resets: 1 });
    assert.deepEqual(r.data, r.fresh);
  });

  t("controller fatal status (CSTS.CFS): reset at the first timeout, retried", () => {
    const r = run(backend, { kind: "cfs", count: 1 }, "read");
    assert.equal(r.res, LEN);
    assert.deepEqual(r.counts, { ...ZERO, retries: 1, timeouts: 1, resets: 1 });
    assert.deepEqual(r.buf, r.old);
  });

  t(
    "a completion with an unknown command id: counted, the I/O times out, is reset and retried",
    () => {
      const r = run(backend, { kind: "bad-cid", count: 1 }, "write");
      assert.equal(r.res, LEN);
      assert.deepEqual(r.counts, {
        ...ZERO,
        invalid: 1,
        retries: 1,
        timeouts: 2,
        aborts: 1,
        resets: 1,
      });
      assert.deepEqual(r.data, r.fresh);
    },
  );

  t("Identify or Create I/O CQ failing at probe: openTestbed fails, naming the probe", () => {
    for (const opcode of [0x06, 0x05]) {
      assert.throws(
        () =>
          openTestbed({
            backend,
            ...(backend === "real" ? { mediaInMemory: true } : {}),
            faults: [{ kind: "admin-fail", admin: true, opcode, count: 1 }],
          }),
        /nvme probe failed: -5/,
        `admin opcode ${opcode}`,
      );
    }
  });
}

for (const backend of ["sim", "real"] as const) {
  Deno.test({
    name:
      `faults ${backend}: dropped commands and unknown ids with 8 I/Os in flight: every I/O completes`,
    ignore: backend === "real" && realWhy !== null,
    fn: async () => {
      // Found by the soak on real: a timeout that fired while a reset was running reset the
      // controller again from inside it, and requests issued to the quiesced queues failed -EIO.
      const { soakSegment } = await import("../../bench/soak.ts");
      for (const kind of ["drop", "bad-cid"] as const) {
        const s = soakSegment(
          {
            backend,
            ios: 4000,
            seed: 5,
            iommu: ["off"],
            premap: ["v2"],
            lba: [512],
            qd: 8,
            faultRules: [{ kind, probability: 0.002 }],
          },
          "off",
          "v2",
          512,
          4000,
          5,
        );
        assert.deepEqual(s.errors, {}, kind);
        assert.equal(s.mismatchedBytes, 0, kind);
        assert.ok((s.faults[kind] ?? 0) > 0 && s.checks.nvmeResets > 0, JSON.stringify(s.checks));
      }
    },
  });
}
