import assert from "node:assert/strict";
import { createDma } from "../../sim/dma/mapping.ts";
import { DmaDirection, type DmaFault, isDmaFault } from "../../sim/dma/types.ts";
import { pfnToPhys } from "../../sim/memory/phys.ts";
import { assertDelta, newKernel, sgOf, userPages } from "./_helpers.ts";

const { BIDIRECTIONAL: BIDI, TO_DEVICE, FROM_DEVICE } = DmaDirection;

function bytes(r: Uint8Array | DmaFault): Uint8Array {
  if (isDmaFault(r)) throw new Error(`unexpected fault ${r.reason} at 0x${r.addr.toString(16)}`);
  return r;
}

Deno.test("lazy: a stale IOTLB entry still translates after unmap, until the flush", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "lazy" });
  const [a, b] = userPages(k, 2);
  const iovaA = dma.api.mapPage(a, 0, 4096, BIDI);
  const iovaB = dma.api.mapPage(b, 0, 4096, BIDI);
  assert.equal(iovaA, 0xffff_f000n);
  assert.equal(iovaB, 0xffff_e000n);
  // The device touches A only: its translation is now in the IOTLB.
  assert.equal(bytes(dma.port.read(iovaA, 4))[0], 0x10);
  dma.api.unmapPage(iovaA, 4096, BIDI);
  dma.api.unmapPage(iovaB, 4096, BIDI);
  assert.equal(dma.iommu!.pgtable.presentPtes, 0);
  const s0 = k.stats.snapshot();
  // A: stale IOTLB hit, the access succeeds and writes the old frame.
  assert.equal(dma.port.write(iovaA, new Uint8Array([0xee])), null);
  assert.equal(a.data[0], 0xee);
  // B was never cached: the walk finds no PTE.
  assert.deepEqual(dma.port.read(iovaB, 4), { addr: iovaB, reason: "unmapped" });
  // The stale write reached memory after the unmap: the DMA-API debug checker reports its byte.
  assertDelta(k, s0, { iommuFaults: 1, dmaDebugErrors: 1, dmaDebugDeviceUnmappedBytes: 1 });
  assert.equal(dma.debug!.counts["device-unmapped-access"], 1);
  // The IOVAs are not reused before the flush.
  const c = dma.api.mapPage(a, 0, 4096, BIDI);
  assert.equal(c, 0xffff_d000n);
  dma.api.unmapPage(c, 4096, BIDI);
  const s1 = k.stats.snapshot();
  dma.api.flushDeferred();
  assertDelta(k, s1, { iotlbFlushes: 1, iovaFrees: 3 });
  assert.deepEqual(dma.port.read(iovaA, 4), { addr: iovaA, reason: "unmapped" });
  // After the flush the freed IOVA comes straight back from the rcache (last freed first).
  assert.equal(dma.api.mapPage(b, 0, 4096, BIDI), c);
});

Deno.test("lazy: the flush queue flushes when full (size 4 holds 3)", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "lazy", flushQueueSize: 4 });
  const pages = userPages(k, 4);
  const iovas = pages.map((p) => dma.api.mapPage(p, 0, 4096, TO_DEVICE));
  const s0 = k.stats.snapshot();
  for (let i = 0; i < 3; i++) dma.api.unmapPage(iovas[i], 4096, TO_DEVICE);
  assertDelta(k, s0, { dmaUnmapPageCalls: 3, iommuPteClears: 3 });
  dma.api.unmapPage(iovas[3], 4096, TO_DEVICE);
  assertDelta(k, s0, { dmaUnmapPageCalls: 4, iommuPteClears: 4, iotlbFlushes: 1, iovaFrees: 3 });
});

Deno.test("strict: the device faults right after unmap, even with the IOTLB loaded", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  const [p] = userPages(k, 1);
  const iova = dma.api.mapPage(p, 0x80, 0x100, BIDI);
  assert.equal(iova, 0xffff_f080n);
  assert.deepEqual([...bytes(dma.port.read(iova, 2))], [0x10, 0x10]);
  assert.equal(dma.iommu!.iotlb.size, 1);
  dma.api.unmapPage(iova, 0x100, BIDI);
  assert.equal(dma.iommu!.iotlb.size, 0);
  const s0 = k.stats.snapshot();
  assert.deepEqual(dma.port.read(iova, 2), { addr: iova, reason: "unmapped" });
  assert.deepEqual(dma.port.write(iova, new Uint8Array(1)), { addr: iova, reason: "unmapped" });
  assertDelta(k, s0, { iommuFaults: 2 });
  assert.equal(p.data[0x80], 0x10);
  assert.deepEqual(dma.iommu!.faultLog.at(-1), { addr: iova, reason: "unmapped" });
});

Deno.test("permission: TO_DEVICE is read-only and FROM_DEVICE write-only for the device", () => {
  for (const mode of ["lazy", "strict"] as const) {
    const k = newKernel();
    using dma = createDma(k, { mode });
    const [r, w] = userPages(k, 2);
    const ro = dma.api.mapPage(r, 0, 4096, TO_DEVICE);
    const wo = dma.api.mapPage(w, 0, 4096, FROM_DEVICE);
    const s0 = k.stats.snapshot();
    assert.equal(bytes(dma.port.read(ro + 5n, 1))[0], 0x10);
    assert.deepEqual(dma.port.write(ro + 5n, new Uint8Array([1])), {
      addr: ro + 5n,
      reason: "permission",
    });
    assert.equal(r.data[5], 0x10);
    assert.equal(dma.port.write(wo, new Uint8Array([7, 8])), null);
    assert.deepEqual([...w.data.subarray(0, 3)], [7, 8, 0x11]);
    assert.deepEqual(dma.port.read(wo, 1), { addr: wo, reason: "permission" });
    assertDelta(k, s0, { iommuFaults: 2 });
  }
});

Deno.test("a fault anywhere in the range leaves memory untouched", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  const [ro, rw] = userPages(k, 2);
  const iovaRo = dma.api.mapPage(ro, 0, 4096, TO_DEVICE); // 0xfffff000
  const iovaRw = dma.api.mapPage(rw, 0, 4096, BIDI); // 0xffffe000, just below
  assert.equal(iovaRw + 4096n, iovaRo);
  // Two pages: the first writable, the second read-only -> nothing written at all.
  const data = new Uint8Array(8192).fill(0xab);
  assert.deepEqual(dma.port.write(iovaRw, data), { addr: iovaRo, reason: "permission" });
  assert.ok(rw.data.every((b) => b === 0x11));
  assert.ok(ro.data.every((b) => b === 0x10));
  // Running past the end of a mapping into nothing: unmapped, nothing written.
  using top = createDma(k, { mode: "strict" });
  const iovaTop = top.api.mapPage(rw, 0, 4096, BIDI);
  assert.equal(iovaTop, 0xffff_f000n);
  assert.deepEqual(top.port.write(iovaTop + 4000n, new Uint8Array(200)), {
    addr: 0x1_0000_0000n,
    reason: "unmapped",
  });
  assert.ok(rw.data.every((b) => b === 0x11));

  // IOMMU off: a DMA running into an unallocated frame is a bad address, nothing touched.
  const k2 = newKernel();
  using off = createDma(k2, { mode: "off" });
  const pfn = k2.phys.allocContig(1);
  const addr = pfnToPhys(pfn);
  assert.deepEqual(off.port.write(addr + 4000n, new Uint8Array(200).fill(1)), {
    addr: addr + 4096n,
    reason: "bad-address",
  });
  assert.ok(k2.phys.page(pfn)!.data.every((b) => b === 0));
  assert.equal(k2.stats.counters.iommuFaults, 0);
});

Deno.test("map_sg: max segment size and sub-page offsets shape the DMA segments", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict", maxSegmentSize: 8192 });
  const sgl = sgOf(userPages(k, 16));
  assert.equal(dma.api.mapSg(sgl, BIDI), 8);
  for (let i = 0; i < 8; i++) {
    assert.equal(sgl[i].dmaAddress, 0xffff_0000n + BigInt(i * 8192));
    assert.equal(sgl[i].dmaLength, 8192);
  }
  dma.api.unmapSg(sgl, 16, BIDI);
});

Deno.test("map_sg: sub-page offsets; only page-ending entries merge with the next", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  // offset 0x200 + 0xe00 ends on a page: merges on; a 0x800 tail ends the segment.
  const pages = userPages(k, 4);
  const mixed = sgOf(pages);
  mixed[0].offset = 0x200;
  mixed[0].length = 0xe00;
  mixed[2].length = 0x800;
  assert.equal(dma.api.mapSg(mixed, TO_DEVICE), 2);
  assert.equal(mixed[0].dmaAddress, 0xffff_c200n);
  assert.equal(mixed[0].dmaLength, 0x2600);
  assert.equal(mixed[1].dmaAddress, 0xffff_f000n);
  assert.equal(mixed[1].dmaLength, 0x1000);
  assert.equal(mixed[2].dmaLength, 0);
  assert.equal(mixed[3].dmaLength, 0);
  const got = bytes(dma.port.read(mixed[0].dmaAddress, 0x2600));
  const want = new Uint8Array(0x2600);
  want.set(pages[0].data.subarray(0x200), 0);
  want.set(pages[1].data, 0xe00);
  want.set(pages[2].data.subarray(0, 0x800), 0x1e00);
  assert.deepEqual(got, want);
  const s0 = k.stats.snapshot();
  dma.api.unmapSg(mixed, 4, TO_DEVICE);
  assertDelta(k, s0, {
    dmaUnmapSgCalls: 1,
    iommuPteClears: 4,
    iotlbInvalidations: 1,
    iovaFrees: 1,
  });
});

Deno.test("map_sg: a segment boundary splits segments (8 KiB mask)", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "lazy", segmentBoundaryMask: 0x1fffn });
  const sgl = sgOf(userPages(k, 4));
  assert.equal(dma.api.mapSg(sgl, BIDI), 2);
  assert.deepEqual(sgl.map((s) => [s.dmaAddress, s.dmaLength]), [
    [0xffff_c000n, 8192],
    [0xffff_e000n, 8192],
    [0xffff_ffff_ffff_ffffn, 0],
    [0xffff_ffff_ffff_ffffn, 0],
  ]);
});

Deno.test("IOTLB: hits, misses, bounded capacity with LRU eviction", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict", iotlbEntries: 2 });
  const sgl = sgOf(userPages(k, 3));
  assert.equal(dma.api.mapSg(sgl, BIDI), 1);
  const base = sgl[0].dmaAddress;
  const tlb = dma.iommu!.iotlb;
  bytes(dma.port.read(base, 1)); // miss
  bytes(dma.port.read(base + 4096n, 1)); // miss
  bytes(dma.port.read(base, 1)); // hit
  bytes(dma.port.read(base + 8192n, 1)); // miss, evicts base+4096
  assert.deepEqual([tlb.hits, tlb.misses, tlb.evictions, tlb.size], [1, 3, 1, 2]);
  assert.equal(tlb.has(Number(base >> 12n)), true);
  assert.equal(tlb.has(Number(base >> 12n) + 1), false);
});

Deno.test("coherent memory through the IOMMU: IOVA bus address, device writes reach the CPU view", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  const s0 = k.stats.snapshot();
  const buf = dma.api.allocCoherent(5000)!;
  assert.equal(buf.npages, 2);
  assert.equal(buf.dma, 0xffff_e000n);
  assert.equal(dma.port.write(buf.dma + 4095n, new Uint8Array([1, 2])), null);
  assert.deepEqual([...buf.cpu.subarray(4095, 4097)], [1, 2]);
  dma.api.freeCoherent(buf);
  assertDelta(k, s0, {
    bytesAllocated: 2 * 4096 + 3 * 4096,
    iovaAllocs: 1,
    iovaFrees: 1,
    iommuPteWrites: 2,
    iommuPteClears: 2,
    iotlbInvalidations: 1,
  });
  assert.deepEqual(dma.port.read(buf.dma, 1), { addr: buf.dma, reason: "unmapped" });
  assert.throws(() => dma.api.freeCoherent(buf), /not a live coherent buffer/);
});

Deno.test("passthrough: the identity domain translates every address, counting nothing", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "passthrough" });
  assert.equal(dma.iommu!.identity, true);
  const [p] = userPages(k, 1);
  const a = dma.api.mapPage(p, 8, 8, FROM_DEVICE);
  assert.equal(a, pfnToPhys(p.pfn, 8));
  // No permission check in an identity domain: the device may read it too.
  assert.equal(bytes(dma.port.read(a, 1))[0], 0x10);
  assert.equal(dma.port.write(a, new Uint8Array([9])), null);
  assert.equal(p.data[8], 9);
  assert.equal(dma.port.read(0x1000n, 1).constructor, Object);
  assert.deepEqual(dma.port.read(0x1000n, 1), { addr: 0x1000n, reason: "bad-address" });
  assert.equal(k.stats.counters.iommuFaults, 0);
  assert.equal(k.stats.counters.iommuPteWrites, 0);
});

Deno.test("IOVA space exhaustion: map_page gives DMA_MAPPING_ERROR, map_sg 0, nothing leaked", () => {
  const k = newKernel();
  // A 13-bit mask leaves exactly one IOVA page (pfn 1; pfn 0 is never handed out).
  using dma = createDma(k, { mode: "strict", dmaMaskBits: 13 });
  const pages = userPages(k, 2);
  const a = dma.api.mapPage(pages[0], 0, 4096, BIDI);
  assert.equal(a, 0x1000n);
  const s0 = k.stats.snapshot();
  assert.equal(dma.api.mapPage(pages[1], 0, 4096, BIDI), 0xffff_ffff_ffff_ffffn);
  assert.equal(dma.api.mapSg(sgOf(pages.slice(1)), BIDI), 0);
  assertDelta(k, s0, { dmaMapPageCalls: 1, dmaMapSgCalls: 1, sgEntries: 1 });
  dma.api.unmapPage(a, 4096, BIDI);
  assert.equal(dma.api.mapPage(pages[1], 0, 4096, BIDI), 0x1000n);
});

Deno.test("iommu_map over a live PTE fails with -EBUSY and undoes its own PTEs", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  const iommu = dma.iommu!;
  assert.equal(iommu.map(0x3000n, 0x1_0000_0000n, 4096, 3), 0);
  const s0 = k.stats.snapshot();
  assert.equal(iommu.map(0x1000n, 0x2_0000_0000n, 3 * 4096, 3), -16);
  assert.equal(iommu.pgtable.presentPtes, 1);
  assertDelta(k, s0, { iommuPteWrites: 2, iommuPteClears: 2 });
  assert.equal(iommu.map(0x1001n, 0n, 4096, 3), -22);
  assert.equal(iommu.map(0x1000n, 0n, 4096, 0), -22);
  assert.throws(() => dma.api.unmapPage(0x5000n, 4096, BIDI), /0 of 4096 bytes were mapped/);
});
