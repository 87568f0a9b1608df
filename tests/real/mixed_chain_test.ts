/**
 * Link chains across the NVMe namespace and an ordinary file give the same
 * completions on both backends (on `real` the wrapper splits them into
 * one-side segments; see ffi/ring_wrapper.ts).
 */
import assert from "node:assert/strict";
import { IOSQE, O, openTestbed } from "../../mod.ts";
import { realNvmeUnavailable } from "../../ffi/testbed.ts";
import type { RingWrapper } from "../../ffi/ring_wrapper.ts";

const why = realNvmeUnavailable();
if (why !== null) console.log(`SKIP real mixed-chain tests: ${why}`);

const L = IOSQE.IO_LINK;
const H = IOSQE.IO_HARDLINK;

/** One member: which file, what, flags. `bad` reads past the namespace's end (a short read). */
interface Step {
  on: "nvme" | "file";
  op: "read" | "write" | "bad" | "nop";
  flags: number;
}

interface Outcome {
  cqes: [string, number][];
  nvme: number[];
  file: number[];
}

function run(backend: "sim" | "real", chain: Step[], device?: "thread" | "inline"): Outcome {
  using tb = openTestbed({
    backend,
    seed: 5,
    iommu: "strict",
    namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 20n }],
    mediaInMemory: true,
    device,
  });
  const nvme = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
  const file = tb.open(tb.tempPath("chain.dat"), O.RDWR | O.CREAT | O.DIRECT, 0o600);
  assert.ok(nvme >= 0 && file >= 0);
  using ring = tb.ring({ entries: 16 });
  using buf = tb.allocBuffer(4096 * chain.length);
  for (let i = 0; i < buf.bytes.length; i++) buf.bytes[i] = (i * 31 + 7) & 0xff;
  // Both files start with 16 KiB of known data.
  using init = tb.allocBuffer(16384);
  init.bytes.fill(0x5a);
  for (const fd of [nvme, file]) {
    ring.write(fd, init.addr, 16384, 0n, { userData: 99n });
    assert.equal(ring.submitAndReap(1)[0].res, 16384);
  }
  chain.forEach((s, i) => {
    const fd = s.on === "nvme" ? nvme : file;
    const a = buf.addr + BigInt(i * 4096);
    const o = { userData: BigInt(i + 1), flags: s.flags };
    if (s.op === "write") ring.write(fd, a, 4096, BigInt(i * 4096), o);
    else if (s.op === "read") ring.read(fd, a, 4096, BigInt((i + 1) % 4 * 4096), o);
    else if (s.op === "bad") ring.read(fd, a, 4096, 1n << 20n, o); // at the end: returns 0
    else ring.nop(o);
  });
  const cqes: [string, number][] = [];
  ring.submit(chain.length);
  while (cqes.length < chain.length) {
    for (const c of ring.reap()) cqes.push([String(c.userData), c.res]);
    if (cqes.length < chain.length) ring.submit(1);
  }
  cqes.sort((a, b) => Number(a[0]) - Number(b[0]));
  const read = (fd: number) => {
    using out = tb.allocBuffer(16384);
    ring.read(fd, out.addr, 16384, 0n, { userData: 98n });
    assert.equal(ring.submitAndReap(1)[0].res, 16384);
    return [...out.bytes.subarray(0, 16384)].filter((_, i) => i % 512 === 0);
  };
  const result = { cqes, nvme: read(nvme), file: read(file) };
  if (backend === "real") {
    assert.ok((ring.raw as RingWrapper).internalCqes >= 0);
  }
  return result;
}

const CASES: [string, Step[]][] = [
  ["nvme write -> file write -> nvme read -> file read, all succeed", [
    { on: "nvme", op: "write", flags: L },
    { on: "file", op: "write", flags: L },
    { on: "nvme", op: "read", flags: L },
    { on: "file", op: "read", flags: 0 },
  ]],
  ["a short read on the namespace breaks the chain: the file members are cancelled", [
    { on: "nvme", op: "write", flags: L },
    { on: "nvme", op: "bad", flags: L },
    { on: "file", op: "write", flags: L },
    { on: "nvme", op: "read", flags: 0 },
  ]],
  ["a short read on the file breaks the chain: the namespace members are cancelled", [
    { on: "file", op: "bad", flags: L },
    { on: "nvme", op: "write", flags: L },
    { on: "file", op: "write", flags: 0 },
  ]],
  ["a hard link carries on past a failure into the other side", [
    { on: "nvme", op: "bad", flags: H },
    { on: "file", op: "write", flags: H },
    { on: "nvme", op: "write", flags: L },
    { on: "file", op: "read", flags: 0 },
  ]],
  ["a NOP between sides, and a chain back and forth five times", [
    { on: "file", op: "write", flags: L },
    { on: "nvme", op: "write", flags: L },
    { on: "file", op: "nop", flags: L },
    { on: "nvme", op: "read", flags: L },
    { on: "file", op: "read", flags: L },
    { on: "nvme", op: "write", flags: 0 },
  ]],
];

for (const [name, chain] of CASES) {
  Deno.test({
    name: `mixed link chain, sim and real agree: ${name}`,
    ignore: why !== null,
    fn() {
      const sim = run("sim", chain);
      for (const device of ["thread", "inline"] as const) {
        assert.deepEqual(run("real", chain, device), sim, `real (${device}) vs sim`);
      }
      if (name.includes("cancelled")) {
        assert.ok(sim.cqes.some(([, res]) => res === -125), "the chain was broken");
      }
    },
  });
}

/**
 * IOSQE_IO_DRAIN across sides: a drained SQE starts only after everything
 * submitted before it completed, on both sides. Each case reads into a buffer
 * on one side and, drained, writes that buffer out on the other: the written
 * bytes are the read's only if the drain waited.
 */
function drainRun(
  backend: "sim" | "real",
  from: "nvme" | "file",
  device?: "thread" | "inline",
): { res: number[]; copied: boolean } {
  using tb = openTestbed({
    backend,
    seed: 6,
    iommu: "strict",
    namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 20n }],
    device,
  });
  const nvme = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
  const file = tb.open(tb.tempPath("drain.dat"), O.RDWR | O.CREAT | O.DIRECT, 0o600);
  using ring = tb.ring({ entries: 16 });
  const src = from === "nvme" ? nvme : file;
  const dst = from === "nvme" ? file : nvme;
  const n = 8;
  using data = tb.allocBuffer(4096 * n);
  for (let i = 0; i < data.bytes.length; i++) data.bytes[i] = (i * 13 + 1) & 0xff;
  ring.write(src, data.addr, 4096 * n, 0n, { userData: 90n });
  assert.equal(ring.submitAndReap(1)[0].res, 4096 * n);
  using buf = tb.allocBuffer(4096 * n);
  buf.bytes.fill(0xee);
  // Several reads in flight, then one drained write of the whole buffer to the other file.
  for (let i = 0; i < n; i++) {
    ring.read(src, buf.addr + BigInt(i * 4096), 4096, BigInt(i * 4096), { userData: BigInt(i) });
  }
  ring.write(dst, buf.addr, 4096 * n, 0n, { userData: 50n, flags: IOSQE.IO_DRAIN });
  const res: number[] = new Array(n + 1).fill(0);
  let got = 0;
  ring.submit(n + 1);
  while (got < n + 1) {
    for (const c of ring.reap()) {
      res[c.userData === 50n ? n : Number(c.userData)] = c.res;
      got++;
    }
    if (got < n + 1) ring.submit(1);
  }
  using back = tb.allocBuffer(4096 * n);
  ring.read(dst, back.addr, 4096 * n, 0n, { userData: 91n });
  assert.equal(ring.submitAndReap(1)[0].res, 4096 * n);
  return { res, copied: back.bytes.every((b, i) => b === data.bytes[i]) };
}

for (const from of ["nvme", "file"] as const) {
  Deno.test({
    name:
      `IO_DRAIN across sides, sim and real agree: reads on the ${from}, drained write on the other`,
    ignore: why !== null,
    fn() {
      const sim = drainRun("sim", from);
      assert.equal(sim.copied, true, "sim: the drained write saw every read's data");
      for (const device of ["thread", "inline"] as const) {
        for (let round = 0; round < 5; round++) {
          assert.deepEqual(drainRun("real", from, device), sim, `real (${device}) round ${round}`);
        }
      }
    },
  });
}
