/**
 * The DMA exposure premapping trades for its saving: a premapped buffer stays
 * mapped for the device between I/Os; a per-I/O mapping exists only while
 * its I/O runs.
 */
import assert from "node:assert/strict";
import { IOSQE, O, openTestbed } from "../../mod.ts";

Deno.test("dmaMappedBytes: 64 KiB premapped stay mapped between I/Os; bvec I/O leaves 0", () => {
  for (const iommu of ["strict", "off", "bounce"] as const) {
    using tb = openTestbed({ iommu, premap: "hardened" });
    const ring = tb.ring({ entries: 8 });
    const fd = tb.open(tb.nvmeDevice!, O.RDWR | O.DIRECT);
    assert.ok(ring.registerFiles([fd]).ok);
    const a = tb.allocBuffer(65536), b = tb.allocBuffer(65536);
    assert.ok(
      ring.registerBuffers([{ addr: a.addr, len: 65536 }, { addr: b.addr, len: 65536 }]).ok,
    );
    assert.equal(tb.dmaMappedBytes, 0, iommu);
    assert.ok(ring.mapBuffers(0, 0, 1).ok);
    assert.equal(tb.dmaMappedBytes, 65536, iommu);
    for (const [buf, idx] of [[a, 0], [b, 1]] as const) {
      ring.writeFixed(0, buf.addr, 65536, 0n, idx, { flags: IOSQE.FIXED_FILE });
      assert.equal(ring.submitAndReap(1)[0].res, 65536);
      assert.equal(tb.dmaMappedBytes, 65536, `${iommu} after the ${idx ? "bvec" : "dma"} I/O`);
    }
    assert.ok(ring.unmapBuffers(0, 0, 1).ok);
    assert.equal(tb.dmaMappedBytes, 0, iommu);
  }
});
