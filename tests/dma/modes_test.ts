import assert from "node:assert/strict";
import { createDma } from "../../sim/dma/mapping.ts";
import { DMA_MAPPING_ERROR, DmaDirection } from "../../sim/dma/types.ts";
import { pfnToPhys } from "../../sim/memory/phys.ts";
import { assertDelta, newKernel, sgOf, userPages } from "./_helpers.ts";

const BIDI = DmaDirection.BIDIRECTIONAL;

for (const mode of ["off", "passthrough"] as const) {
  for (const n of [1, 16]) {
    Deno.test(`${mode}: ${n}-page sg list maps one segment per entry, bus = phys`, () => {
      const k = newKernel();
      using dma = createDma(k, { mode });
      const sgl = sgOf(userPages(k, n));
      const s0 = k.stats.snapshot();
      assert.equal(dma.api.mapSg(sgl, BIDI), n);
      for (const s of sgl) {
        assert.equal(s.dmaAddress, pfnToPhys(s.page.pfn));
        assert.equal(s.dmaLength, 4096);
      }
      assertDelta(k, s0, { dmaMapSgCalls: 1, sgEntries: n });
      // The device reaches the frames at those addresses.
      const r = dma.port.read(sgl[n - 1].dmaAddress, 4096);
      assert.ok(r instanceof Uint8Array);
      assert.equal(r[0], 0x10 + n - 1);
      const s1 = k.stats.snapshot();
      dma.api.unmapSg(sgl, n, BIDI);
      assertDelta(k, s1, { dmaUnmapSgCalls: 1 });
      assert.equal(dma.api.needSync(sgl[0].dmaAddress), false);
      assert.equal(dma.api.maxMappingSize(), Number.MAX_SAFE_INTEGER);
    });
  }
}

for (const n of [1, 16]) {
  Deno.test(`strict: ${n}-page sg list is one IOVA range, one segment; unmap invalidates`, () => {
    const k = newKernel();
    using dma = createDma(k, { mode: "strict" });
    const sgl = sgOf(userPages(k, n));
    const s0 = k.stats.snapshot();
    assert.equal(dma.api.mapSg(sgl, BIDI), 1);
    // Top-down below 4 GiB, aligned to the (power-of-two) size.
    assert.equal(sgl[0].dmaAddress, n === 1 ? 0xffff_f000n : 0xffff_0000n);
    assert.equal(sgl[0].dmaLength, n * 4096);
    for (const s of sgl.slice(1)) {
      assert.equal(s.dmaAddress, DMA_MAPPING_ERROR);
      assert.equal(s.dmaLength, 0);
    }
    // First map also builds three table pages below the root (3 x 4 KiB).
    assertDelta(k, s0, {
      dmaMapSgCalls: 1,
      sgEntries: n,
      iovaAllocs: 1,
      iommuPteWrites: n,
      bytesAllocated: 3 * 4096,
    });
    const s1 = k.stats.snapshot();
    dma.api.unmapSg(sgl, n, BIDI);
    assertDelta(k, s1, {
      dmaUnmapSgCalls: 1,
      iommuPteClears: n,
      iotlbInvalidations: 1,
      iovaFrees: 1,
    });
    assert.equal(dma.iommu!.pgtable.presentPtes, 0);
  });

  Deno.test(`lazy: ${n}-page sg list unmap defers the invalidation and the IOVA free`, () => {
    const k = newKernel();
    using dma = createDma(k, { mode: "lazy" });
    const sgl = sgOf(userPages(k, n));
    assert.equal(dma.api.mapSg(sgl, BIDI), 1);
    const s1 = k.stats.snapshot();
    dma.api.unmapSg(sgl, n, BIDI);
    assertDelta(k, s1, { dmaUnmapSgCalls: 1, iommuPteClears: n });
    const s2 = k.stats.snapshot();
    dma.api.flushDeferred();
    assertDelta(k, s2, { iotlbFlushes: 1, iovaFrees: 1 });
    // Nothing queued: a second flush does nothing.
    dma.api.flushDeferred();
    assertDelta(k, s2, { iotlbFlushes: 1, iovaFrees: 1 });
  });

  Deno.test(`bounce: ${n}-page sg list bounces each entry into its own slots`, () => {
    const k = newKernel();
    using dma = createDma(k, { mode: "bounce", swiotlbSlots: 256 });
    const sgl = sgOf(userPages(k, n));
    const s0 = k.stats.snapshot();
    assert.equal(dma.api.mapSg(sgl, BIDI), n);
    const base = sgl[0].dmaAddress;
    sgl.forEach((s, i) => {
      assert.equal(s.dmaAddress, base + BigInt(i * 4096));
      assert.equal(s.dmaLength, 4096);
      assert.equal(dma.api.needSync(s.dmaAddress), true);
    });
    assertDelta(k, s0, { dmaMapSgCalls: 1, sgEntries: n, bounceBytes: n * 4096 });
    const s1 = k.stats.snapshot();
    dma.api.unmapSg(sgl, n, BIDI);
    assertDelta(k, s1, { dmaUnmapSgCalls: 1, bounceBytes: n * 4096 });
  });
}

Deno.test("mapPage/unmapPage count per call in every mode; bad arguments give DMA_MAPPING_ERROR", () => {
  for (const mode of ["off", "passthrough", "lazy", "strict", "bounce"] as const) {
    const k = newKernel();
    using dma = createDma(k, { mode, swiotlbSlots: 128 });
    const [p] = userPages(k, 1);
    const s0 = k.stats.snapshot();
    const a = dma.api.mapPage(p, 0x100, 0x200, DmaDirection.TO_DEVICE);
    assert.notEqual(a, DMA_MAPPING_ERROR, mode);
    assert.equal(a & 0xfffn, 0x100n, `${mode}: in-page offset kept`);
    assert.equal(dma.api.mapPage(p, -1, 16, DmaDirection.TO_DEVICE), DMA_MAPPING_ERROR);
    assert.equal(dma.api.mapPage(p, 0, 0, DmaDirection.TO_DEVICE), DMA_MAPPING_ERROR);
    dma.api.unmapPage(a, 0x200, DmaDirection.TO_DEVICE);
    const iommu = mode === "lazy" || mode === "strict";
    assertDelta(k, s0, {
      dmaMapPageCalls: 3,
      dmaUnmapPageCalls: 1,
      iovaAllocs: iommu ? 1 : 0,
      iovaFrees: mode === "strict" ? 1 : 0,
      iommuPteWrites: iommu ? 1 : 0,
      iommuPteClears: iommu ? 1 : 0,
      iotlbInvalidations: mode === "strict" ? 1 : 0,
      bytesAllocated: iommu ? 3 * 4096 : 0,
      bounceBytes: mode === "bounce" ? 0x200 : 0,
    });
    assert.throws(() => dma.api.mapPage(p, 0, 16, 7 as never), /invalid direction 7/);
  }
});

Deno.test("createDma rejects a bad mode and bad limits", () => {
  const k = newKernel();
  assert.throws(() => createDma(k, { mode: "weird" as never }), /bad mode weird/);
  assert.throws(() => createDma(k, { mode: "strict", maxSegmentSize: 100 }), /maxSegmentSize/);
  assert.throws(
    () => createDma(k, { mode: "strict", segmentBoundaryMask: 0x1234n }),
    /segmentBoundaryMask/,
  );
  assert.throws(() => createDma(k, { mode: "lazy", flushQueueSize: 3 }), /flush queue size 3/);
});
