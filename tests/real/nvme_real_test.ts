/**
 * The real backend with its emulated NVMe namespace: the live kernel's ring,
 * the TypeScript host stack, the C controller. Skipped, with the reason
 * printed, where liburing, the built library or FFI permission is missing.
 */
import assert from "node:assert/strict";
import { IOSQE, O, openTestbed, type Testbed } from "../../mod.ts";
import { realNvmeUnavailable } from "../../ffi/testbed.ts";
import type { RingWrapper } from "../../ffi/ring_wrapper.ts";
import { Rng } from "../../sim/random.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { runWorkload } from "../../bench/workload.ts";

const why = realNvmeUnavailable();
if (why !== null) console.log(`SKIP real-backend NVMe tests: ${why}`);
const ignore = why !== null;

/** CqTail of a ring from /proc/self/fdinfo. */
function cqTail(fd: number): number {
  const m = /^CqTail:\s*(\d+)/m.exec(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`));
  if (!m) throw new Error("fdinfo has no CqTail");
  return Number(m[1]);
}

function fill(rng: Rng, b: Uint8Array): void {
  rng.fill(b);
}

Deno.test({
  name: "real: the namespace's descriptor is an O_PATH descriptor the kernel holds",
  ignore,
  fn() {
    using tb = openTestbed({ backend: "real", mediaInMemory: true });
    const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
    assert.ok(fd >= 3);
    const flags = /^flags:\s*([0-7]+)/m.exec(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`))!;
    assert.equal((parseInt(flags[1], 8) & O.PATH) !== 0, true);
    assert.equal(tb.close(fd), 0);
    assert.equal(tb.close(fd), -Errno.EBADF);
  },
});

Deno.test({
  name: "real: every CQE reaped is a kernel CQE; CqTail advances by reaped + the wrapper's own",
  ignore,
  fn() {
    using tb = openTestbed({ backend: "real", mediaInMemory: true, device: "thread" });
    const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
    using ring = tb.ring({ entries: 16 });
    const w = ring.raw as RingWrapper;
    using buf = tb.allocBuffer(64 * 1024);
    ring.registerFiles([fd]);
    ring.registerBuffers([{ addr: buf.addr, len: 64 * 1024 }]);
    ring.mapBuffers(0, 0, 1);
    const t0 = cqTail(ring.raw.fd);
    const internal0 = w.internalCqes;
    let reaped = 0;
    const rng = new Rng(5);
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 8; i++) {
        const off = BigInt(rng.int(1000) * 4096);
        const a = buf.addr + BigInt(i * 4096);
        if (i % 2) ring.writeFixed(0, a, 4096, off, 0, { flags: IOSQE.FIXED_FILE, userData: 1n });
        else ring.readFixed(0, a, 4096, off, 0, { flags: IOSQE.FIXED_FILE, userData: 2n });
      }
      ring.nop({ userData: 3n }); // a kernel op in the same ring
      ring.submit(9);
      const cs = ring.reap();
      for (const c of cs) assert.equal(c.res, c.userData === 3n ? 0 : 4096);
      reaped += cs.length;
    }
    assert.equal(reaped, 50 * 9);
    const internal = w.internalCqes - internal0;
    assert.equal(cqTail(ring.raw.fd) - t0, reaped + internal);
    assert.ok(internal > 0, "the device thread's interrupts arrive as kernel CQEs");
  },
});

/** Random mixed reads and writes at `qd`, every byte checked against a shadow copy. */
function mixedVerify(tb: Testbed, qd: number, ios: number, seed: number): number {
  const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
  using ring = tb.ring({ entries: qd * 2 });
  const bs = 4096;
  const blocks = 2048;
  const shadow = new Uint8Array(blocks * bs);
  using buf = tb.allocBuffer(qd * bs);
  ring.registerFiles([fd]);
  ring.registerBuffers([{ addr: buf.addr, len: qd * bs }]);
  assert.equal(ring.mapBuffers(0, 0, 1).res, 0);
  const rng = new Rng(seed);
  const busy = new Map<number, { block: number; write: boolean }>();
  const inUse = new Set<number>();
  let issued = 0;
  let done = 0;
  let checked = 0;
  while (done < ios) {
    for (let slot = 0; slot < qd && issued < ios; slot++) {
      if (busy.has(slot)) continue;
      let block: number;
      do block = rng.int(blocks); while (inUse.has(block));
      const write = rng.int(2) === 0;
      const view = buf.bytes.subarray(slot * bs, (slot + 1) * bs);
      const addr = buf.addr + BigInt(slot * bs);
      if (write) {
        fill(rng, view);
        shadow.set(view, block * bs);
        ring.writeFixed(0, addr, bs, BigInt(block * bs), 0, {
          flags: IOSQE.FIXED_FILE,
          userData: BigInt(slot),
        });
      } else {
        ring.readFixed(0, addr, bs, BigInt(block * bs), 0, {
          flags: IOSQE.FIXED_FILE,
          userData: BigInt(slot),
        });
      }
      busy.set(slot, { block, write });
      inUse.add(block);
      issued++;
    }
    ring.submit(1);
    for (const c of ring.reap()) {
      const slot = Number(c.userData);
      const io = busy.get(slot)!;
      assert.equal(c.res, bs, `slot ${slot} block ${io.block}: ${c.res}`);
      if (!io.write) {
        const got = buf.bytes.subarray(slot * bs, (slot + 1) * bs);
        const want = shadow.subarray(io.block * bs, (io.block + 1) * bs);
        assert.deepEqual(got, want, `block ${io.block} read back wrong`);
        checked++;
      }
      busy.delete(slot);
      inUse.delete(io.block);
      done++;
    }
  }
  tb.close(fd);
  return checked;
}

Deno.test({
  name: "real: random mixed reads and writes at QD32 on the device thread verify byte-exact",
  ignore,
  fn() {
    for (const iommu of ["strict", "off"] as const) {
      using tb = openTestbed({ backend: "real", iommu, device: "thread" });
      const checked = mixedVerify(tb, 32, 3000, 7);
      assert.ok(checked > 1000, `${iommu}: ${checked} reads checked`);
      const dev = (tb as Testbed & { device?: { stats(): { commands: number } } }).device;
      assert.ok(dev!.stats().commands >= 3000);
    }
  },
});

Deno.test({
  name:
    "real: a namespace written, flushed, closed and reopened from its media file reads back the same",
  ignore,
  fn() {
    const dir = Deno.makeTempDirSync({ dir: "/var/tmp", prefix: "premap-media-" });
    const media = `${dir}/ns1.img`;
    const rng = new Rng(11);
    const data = new Uint8Array(64 * 1024);
    rng.fill(data);
    try {
      {
        using tb = openTestbed({ backend: "real", mediaPaths: [media], iommu: "lazy" });
        const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
        using ring = tb.ring({ entries: 4 });
        using buf = tb.allocBuffer(data.length);
        buf.bytes.set(data);
        ring.write(fd, buf.addr, data.length, 1n << 20n, { userData: 1n });
        assert.equal(ring.submitAndReap(1)[0].res, data.length);
        ring.fsync(fd, false, { userData: 2n });
        assert.equal(ring.submitAndReap(1)[0].res, 0);
        tb.close(fd);
      }
      assert.equal(Deno.statSync(media).size, 1 << 30);
      {
        using tb = openTestbed({ backend: "real", mediaPaths: [media], iommu: "strict" });
        const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
        using ring = tb.ring({ entries: 4 });
        using buf = tb.allocBuffer(data.length);
        ring.read(fd, buf.addr, data.length, 1n << 20n, { userData: 3n });
        assert.equal(ring.submitAndReap(1)[0].res, data.length);
        assert.deepEqual(buf.bytes, data);
        tb.close(fd);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "real: per-I/O counts of none, bvec and dma equal the sim backend's",
  ignore,
  fn() {
    for (const iommu of ["strict", "lazy", "bounce"] as const) {
      const counts = (backend: "sim" | "real") => {
        using tb = openTestbed({ backend, iommu, seed: 3, mediaInMemory: true });
        return (["none", "bvec", "dma"] as const).map((path) => {
          const r = runWorkload(tb, {
            path,
            bs: 16384,
            qd: 4,
            rw: "randread",
            ios: 64,
            seed: 3,
          }, iommu);
          // Waiting io_uring_enters follow the device thread's timing on real (a wait can
          // return with fewer I/Os done, and the loop enters again): every other count is
          // the host stack's own path and must match.
          const { enterCalls, ...rest } = r.perIo!;
          assert.ok(enterCalls >= 1, `${backend} ${path}: ${enterCalls} enters per I/O`);
          return { path, counts: rest };
        });
      };
      assert.deepEqual(counts("real"), counts("sim"), `iommu=${iommu}`);
    }
  },
});
