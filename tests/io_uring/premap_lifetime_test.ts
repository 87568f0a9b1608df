/**
 * The proposal's mapping lifetime with I/O in flight (DESIGN.md section 2),
 * on the sim testbed under IOMMU strict. The sim device runs only when the
 * kernel is polled, so an SQE submitted without waiting is in flight (its
 * PRPs written, the doorbell rung) until the next wait.
 *
 * - `premap: "v2"` (the default), as posted: UNMAP_BUFFERS and removing the
 *   file slot unmap at once, so the device's DMA faults and the CQE is -EIO;
 *   unregistering the buffer defers the unmap to the last in-flight user.
 * - `premap: "hardened"`: every unmap waits for the in-flight I/O, which
 *   completes with its full length.
 *
 * The last two tests run the UNMAP case on the real backend (C controller
 * stepped inline), which builds its own Kernel from the same option.
 */

import assert from "node:assert/strict";
import {
  type Completion,
  IOSQE,
  O,
  openTestbed,
  type PremapVariant,
  realNvmeUnavailable,
} from "../../mod.ts";
import type { SimTestbed } from "../../sim/testbed.ts";
import { pattern } from "./_util.ts";

const BUF = 16384;

/** A testbed with one premapped 16 KiB buffer on fixed slot 0 whose contents are on the media. */
function premapped(premap: PremapVariant | undefined) {
  const tb = openTestbed({ backend: "sim", seed: 5, iommu: "strict", premap }) as SimTestbed;
  const ring = tb.ring({ entries: 8 });
  const buf = tb.allocBuffer(BUF);
  const fd = tb.open(tb.nvmeDevice, O.RDWR | O.DIRECT);
  assert.equal(ring.registerFiles([fd]).res, 0);
  assert.equal(ring.registerBuffers([{ addr: buf.addr, len: BUF }]).res, 0);
  assert.equal(ring.mapBuffers(0, 0, 1).res, 0);
  buf.bytes.set(pattern(BUF, 9));
  ring.writeFixed(0, buf.addr, BUF, 0n, 0, { flags: IOSQE.FIXED_FILE, userData: 1n });
  assert.deepEqual(ring.submitAndReap(1).map((c) => c.res), [BUF]);
  buf.bytes.fill(0);
  const c = tb.stats.counters;
  return {
    tb,
    ring,
    buf,
    /** Pages the driver has DMA-mapped and not unmapped. */
    livePages: () => c.dmaMapPageCalls - c.dmaUnmapPageCalls,
    /** Submit a premapped READ_FIXED of the whole buffer without waiting. */
    startRead() {
      ring.readFixed(0, buf.addr, BUF, 0n, 0, { flags: IOSQE.FIXED_FILE, userData: 2n });
      assert.deepEqual(ring.submit(0), { res: 1, ok: true, errno: null });
      assert.equal(tb.host.driver.outstandingCommands, 1, "the read is in flight");
    },
    /** Wait for the read's CQE. */
    finish(): Completion {
      assert.equal(ring.submit(1).res, 0);
      const cqes = ring.reap();
      assert.equal(cqes.length, 1);
      return cqes[0];
    },
    [Symbol.dispose]() {
      tb[Symbol.dispose]();
    },
  };
}

Deno.test("lifetime v2: UNMAP with a premapped READ_FIXED in flight unmaps at once; the DMA faults, -EIO", () => {
  using f = premapped(undefined);
  assert.equal(f.tb.kernel.premap, "v2", "v2 is the default");
  f.startRead();
  assert.equal(f.livePages(), 4);
  assert.equal(f.ring.unmapBuffers(0, 0, 1).res, 0);
  assert.equal(f.livePages(), 0, "unmapped before the device ran");
  assert.equal(f.tb.host.driver.liveMappings, 0, "the PRP array is freed too");
  const faults = f.tb.stats.counters.iommuFaults;
  const cqe = f.finish();
  assert.equal(cqe.res, -5);
  assert.equal(cqe.errno, "EIO");
  assert.ok(f.tb.stats.counters.iommuFaults > faults, "the device's DMA faulted in the IOMMU");
  assert.deepEqual(f.buf.bytes, new Uint8Array(BUF), "no byte reached the buffer");
});

Deno.test("lifetime hardened: UNMAP with a READ_FIXED in flight waits; the I/O completes in full", () => {
  using f = premapped("hardened");
  f.startRead();
  assert.equal(f.ring.unmapBuffers(0, 0, 1).res, 0);
  assert.equal(f.livePages(), 4, "still mapped while the I/O holds the tag");
  const cqe = f.finish();
  assert.equal(cqe.res, BUF);
  assert.equal(f.livePages(), 0, "unmapped after the completion");
  assert.equal(f.tb.host.driver.liveMappings, 0);
  assert.equal(f.tb.stats.counters.iommuFaults, 0);
  assert.deepEqual(f.buf.bytes, pattern(BUF, 9));
  // The buffer can be mapped again, and works.
  assert.equal(f.ring.mapBuffers(0, 0, 1).res, 0);
});

/**
 * Bounce mode: a premapped buffer lives in swiotlb slots filled at MAP time. A plain READ
 * into the same buffer (not premapped) writes the user pages; an unmap that copies the
 * bounce slots back (dma_unmap_page without DMA_ATTR_SKIP_CPU_SYNC, as modelled for the
 * posted code) overwrites that data with the MAP-time bytes. `hardened` syncs per I/O and
 * unmaps with DMA_ATTR_SKIP_CPU_SYNC. Found by the lifecycle fuzzer (seed 14).
 */
for (const premap of ["v2", "hardened"] as const) {
  Deno.test(`lifetime ${premap}, bounce: UNMAP after a plain READ into a premapped buffer`, () => {
    using tb = openTestbed({ backend: "sim", seed: 5, iommu: "bounce", premap }) as SimTestbed;
    const ring = tb.ring({ entries: 8 });
    const buf = tb.allocBuffer(BUF);
    const fd = tb.open(tb.nvmeDevice, O.RDWR | O.DIRECT);
    assert.equal(ring.registerFiles([fd]).res, 0);
    assert.equal(ring.registerBuffers([{ addr: buf.addr, len: BUF }]).res, 0);
    buf.bytes.set(pattern(BUF, 9));
    ring.write(fd, buf.addr, BUF, 0n, { userData: 1n });
    assert.deepEqual(ring.submitAndReap(1).map((c) => c.res), [BUF]);
    buf.bytes.fill(0x5a); // what the buffer holds when it is mapped
    assert.equal(ring.mapBuffers(0, 0, 1).res, 0);
    ring.read(fd, buf.addr, BUF, 0n, { userData: 2n }); // the plain path: the user pages
    assert.deepEqual(ring.submitAndReap(1).map((c) => c.res), [BUF]);
    assert.deepEqual(buf.bytes, pattern(BUF, 9));
    assert.equal(ring.unmapBuffers(0, 0, 1).res, 0);
    if (premap === "hardened") {
      assert.deepEqual(buf.bytes, pattern(BUF, 9), "the read's bytes stay");
    } else {
      assert.deepEqual(buf.bytes, new Uint8Array(BUF).fill(0x5a), "the MAP-time bytes came back");
    }
  });
}

Deno.test("lifetime v2: emptying the file slot with I/O in flight unmaps at once (io_dma_unmap_file)", () => {
  using f = premapped("v2");
  f.startRead();
  assert.equal(f.ring.updateFiles(0, [-1]).res, 1);
  assert.equal(f.livePages(), 0);
  assert.equal(f.finish().res, -5);
  assert.deepEqual(f.buf.bytes, new Uint8Array(BUF));
});

Deno.test("lifetime hardened: emptying the file slot with I/O in flight waits for it", () => {
  using f = premapped("hardened");
  f.startRead();
  assert.equal(f.ring.updateFiles(0, [-1]).res, 1);
  assert.equal(f.livePages(), 4);
  assert.equal(f.finish().res, BUF);
  assert.equal(f.livePages(), 0);
  assert.deepEqual(f.buf.bytes, pattern(BUF, 9));
});

for (const premap of ["v2", "hardened"] as const) {
  Deno.test(`lifetime ${premap}: unregistering the buffer defers the unmap to the last in-flight user`, () => {
    using f = premapped(premap);
    f.startRead();
    assert.equal(f.ring.unregisterBuffers().res, 0, "the call returns at once");
    assert.equal(f.livePages(), 4);
    assert.equal(f.finish().res, BUF);
    assert.equal(f.livePages(), 0);
    assert.deepEqual(f.buf.bytes, pattern(BUF, 9));
  });
}

// The real backend builds its own Kernel from the same option: the C controller, stepped inline
// (so the read stays in flight until the wait), sees the same lifetime.
const noReal = realNvmeUnavailable();
for (const premap of ["v2", "hardened"] as const) {
  Deno.test({
    name: `lifetime ${premap} (real, inline device): UNMAP with a READ_FIXED in flight` +
      (noReal ? ` (SKIP: ${noReal})` : ""),
    ignore: noReal !== null,
    fn() {
      using tb = openTestbed({
        backend: "real",
        device: "inline",
        mediaInMemory: true,
        iommu: "strict",
        premap,
      });
      using ring = tb.ring({ entries: 8 });
      using buf = tb.allocBuffer(BUF);
      assert.equal(ring.registerFiles([tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT)]).res, 0);
      assert.equal(ring.registerBuffers([{ addr: buf.addr, len: BUF }]).res, 0);
      assert.equal(ring.mapBuffers(0, 0, 1).res, 0);
      buf.bytes.set(pattern(BUF, 4));
      ring.writeFixed(0, buf.addr, BUF, 0n, 0, { flags: IOSQE.FIXED_FILE, userData: 1n });
      assert.deepEqual(ring.submitAndReap(1).map((c) => c.res), [BUF]);
      buf.bytes.fill(0);
      ring.readFixed(0, buf.addr, BUF, 0n, 0, { flags: IOSQE.FIXED_FILE, userData: 2n });
      assert.equal(ring.submit(0).res, 1);
      const c = tb.stats!.counters;
      assert.equal(ring.unmapBuffers(0, 0, 1).res, 0);
      assert.equal(c.dmaMapPageCalls - c.dmaUnmapPageCalls, premap === "v2" ? 0 : 4);
      assert.equal(ring.submit(1).res, 0);
      const res = ring.reap().map((x) => x.res);
      assert.equal(c.dmaMapPageCalls - c.dmaUnmapPageCalls, 0);
      if (premap === "v2") {
        assert.deepEqual(res, [-5]);
        assert.deepEqual(buf.bytes, new Uint8Array(BUF));
      } else {
        assert.deepEqual(res, [BUF]);
        assert.deepEqual(buf.bytes, pattern(BUF, 4));
      }
    },
  });
}
