import assert from "node:assert/strict";
import { createDma } from "../../sim/dma/mapping.ts";
import { IO_TLB_SIZE } from "../../sim/dma/swiotlb.ts";
import { DMA_MAPPING_ERROR, DmaDirection, type DmaFault, isDmaFault } from "../../sim/dma/types.ts";
import { assertDelta, newKernel, sgOf, userPages } from "./_helpers.ts";

const { BIDIRECTIONAL: BIDI, TO_DEVICE, FROM_DEVICE } = DmaDirection;

function bytes(r: Uint8Array | DmaFault): Uint8Array {
  if (isDmaFault(r)) throw new Error(`unexpected fault ${r.reason}`);
  return r;
}

Deno.test("bounce TO_DEVICE: map copies in; the device never writes the CPU page", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "bounce", swiotlbSlots: 128 });
  const [p] = userPages(k, 1);
  for (let i = 0; i < 4096; i++) p.data[i] = i & 0xff;
  const s0 = k.stats.snapshot();
  const a = dma.api.mapPage(p, 0x300, 0x900, TO_DEVICE);
  assert.equal(a & 0xfffn, 0x300n); // min_align_mask 0xfff keeps the in-page offset
  assert.deepEqual(bytes(dma.port.read(a, 0x900)), p.data.slice(0x300, 0xc00));
  assert.equal(dma.port.write(a, new Uint8Array(4).fill(0xff)), null); // no IOMMU to stop it
  dma.api.unmapPage(a, 0x900, TO_DEVICE);
  assert.equal(p.data[0x300], 0x00); // TO_DEVICE never copies back
  assertDelta(k, s0, { dmaMapPageCalls: 1, dmaUnmapPageCalls: 1, bounceBytes: 0x900 });
});

Deno.test("bounce FROM_DEVICE: device writes reach the CPU only on sync_for_cpu/unmap", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "bounce", swiotlbSlots: 128 });
  const [p] = userPages(k, 1);
  const s0 = k.stats.snapshot();
  const a = dma.api.mapPage(p, 0, 4096, FROM_DEVICE);
  assert.equal(dma.api.needSync(a), true);
  // The kernel copies in even for FROM_DEVICE (partial device writes keep old bytes).
  assert.equal(bytes(dma.port.read(a + 10n, 1))[0], 0x10);
  assert.equal(dma.port.write(a, new Uint8Array(4096).fill(0x5a)), null);
  assert.equal(p.data[0], 0x10);
  dma.api.syncSingleForCpu(a + 0x100n, 0x10, FROM_DEVICE); // partial sync: 16 bytes
  assert.deepEqual([p.data[0xff], p.data[0x100], p.data[0x10f], p.data[0x110]], [
    0x10,
    0x5a,
    0x5a,
    0x10,
  ]);
  dma.api.syncSingleForDevice(a, 4096, FROM_DEVICE); // FROM_DEVICE: nothing to copy
  dma.api.unmapPage(a, 4096, FROM_DEVICE);
  assert.ok(p.data.every((b) => b === 0x5a));
  assertDelta(k, s0, {
    dmaMapPageCalls: 1,
    dmaUnmapPageCalls: 1,
    dmaSyncs: 2,
    bounceBytes: 4096 + 0x10 + 4096,
  });
});

Deno.test("bounce BIDIRECTIONAL: sync_for_device pushes CPU changes to the slot", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "bounce", swiotlbSlots: 128 });
  const [p] = userPages(k, 1);
  const a = dma.api.mapPage(p, 0x800, 0x400, BIDI);
  assert.equal(a & 0xfffn, 0x800n);
  p.data[0x800] = 0x77;
  assert.equal(bytes(dma.port.read(a, 1))[0], 0x10);
  dma.api.syncSingleForDevice(a, 0x400, BIDI);
  assert.equal(bytes(dma.port.read(a, 1))[0], 0x77);
  // Past the mapping's end: swiotlb_bounce() warns and clips the copy to the mapping.
  const s0 = k.stats.snapshot();
  dma.api.syncSingleForCpu(a, 0x401, BIDI);
  assertDelta(k, s0, { dmaSyncs: 1, bounceBytes: 0x400, swiotlbWarnings: 1, dmaDebugErrors: 1 });
  assert.equal(dma.debug!.counts["sync-outside-range"], 1);
  assert.match(
    dma.swiotlb!.warnings.at(-1)!.message,
    /Buffer overflow detected\. Allocation size: 1024\. Mapping size: 1025\./,
  );
  dma.api.unmapPage(a, 0x400, BIDI);
  assert.equal(dma.swiotlb!.usedSlots, 0);
  // A second unmap finds INVALID_PHYS_ADDR: nothing is copied, nothing else is released.
  const s1 = k.stats.snapshot();
  dma.api.unmapPage(a, 0x400, BIDI);
  assertDelta(k, s1, { dmaUnmapPageCalls: 1, dmaDebugErrors: 1 });
  assert.equal(dma.swiotlb!.usedSlots, 0);
});

Deno.test("bounce: unmaps from the page base with 4096 bytes (the posted premap unmap)", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "bounce", swiotlbSlots: 128, debug: false });
  const tlb = dma.swiotlb!;
  const [p, q, r] = userPages(k, 3);
  // First bvec at offset 0x200 to the page end: alignment offset 0x200, 2 slots.
  const a = dma.api.mapPage(p, 0x200, 0xe00, BIDI);
  assert.equal(tlb.usedSlots, 2);
  assert.equal(dma.port.write(a, new Uint8Array(0xe00).fill(0xee)), null);
  // nvme_pci_dma_unmap() as posted: entry = bus address - offset (the page base), and
  // PAGE_SIZE - offset_in_page(entry) = 4096 bytes.
  let s0 = k.stats.snapshot();
  dma.api.unmapPage(a - 0x200n, 4096, BIDI);
  // swiotlb_bounce() refuses a copy starting before the mapping: the device's bytes are lost.
  assertDelta(k, s0, { dmaUnmapPageCalls: 1, swiotlbWarnings: 1 });
  assert.equal(
    tlb.warnings.at(-1)!.message,
    "swiotlb: Access before mapping start detected. orig offset 512, requested offset 0.",
  );
  assert.equal(p.data[0x200], 0x10);
  assert.equal(tlb.usedSlots, 0); // release from the page base's slot: nr_slots(0xe00) = 2

  // Last bvec, 0x300 bytes at offset 0, unmapped with 4096: the copy back is clipped.
  const b = dma.api.mapPage(q, 0, 0x300, BIDI);
  assert.equal(dma.port.write(b, new Uint8Array(0x300).fill(0xdd)), null);
  s0 = k.stats.snapshot();
  dma.api.unmapPage(b, 4096, BIDI);
  assertDelta(k, s0, { dmaUnmapPageCalls: 1, swiotlbWarnings: 1, bounceBytes: 0x300 });
  assert.equal(
    tlb.warnings.at(-1)!.message,
    "swiotlb: Buffer overflow detected. Allocation size: 768. Mapping size: 4096.",
  );
  assert.deepEqual([q.data[0x2ff], q.data[0x300]], [0xdd, 0x11]);
  assert.equal(tlb.usedSlots, 0);

  // A first bvec at offset 0xa00: one slot at an odd index; the page base is the slot
  // before it, which is free, so nothing is copied and nothing released: a leaked slot.
  const c = dma.api.mapPage(r, 0xa00, 0x600, BIDI);
  assert.equal(tlb.usedSlots, 1);
  s0 = k.stats.snapshot();
  dma.api.unmapPage(c - 0xa00n, 4096, BIDI);
  assertDelta(k, s0, { dmaUnmapPageCalls: 1 });
  assert.equal(tlb.usedSlots, 1);
  assert.equal(tlb.mappings, 1);
});

Deno.test("bounce: max mapping size and exhaustion give DMA_MAPPING_ERROR / 0", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "bounce", swiotlbSlots: 128 });
  // IO_TLB_SEGSIZE * IO_TLB_SIZE minus min_align_mask rounded up to a slot.
  assert.equal(dma.api.maxMappingSize(), 256 * 1024 - 4096);
  using noAlign = createDma(newKernel(), { mode: "bounce", swiotlbSlots: 128, minAlignMask: 0 });
  assert.equal(noAlign.api.maxMappingSize(), 256 * 1024);

  // One physically contiguous 256 KiB + 1 page region, mapped through its first page.
  const pfn = k.phys.allocContig(65);
  const first = k.phys.page(pfn)!;
  assert.equal(dma.api.mapPage(first, 0, 256 * 1024 + 1, TO_DEVICE), DMA_MAPPING_ERROR);
  const whole = dma.api.mapPage(first, 0, 256 * 1024, TO_DEVICE); // 128 slots, page aligned
  assert.notEqual(whole, DMA_MAPPING_ERROR);
  assert.equal(dma.api.mapPage(first, 0, 16, TO_DEVICE), DMA_MAPPING_ERROR); // full
  dma.api.unmapPage(whole, 256 * 1024, TO_DEVICE);

  // 64 one-page entries fill the pool (2 slots each); a 65th entry fails the whole list.
  const pages = userPages(k, 65);
  const sgl = sgOf(pages.slice(0, 64));
  assert.equal(dma.api.mapSg(sgl, TO_DEVICE), 64);
  const s0 = k.stats.snapshot();
  assert.equal(dma.api.mapSg(sgOf(pages.slice(64)), TO_DEVICE), 0);
  assertDelta(k, s0, { dmaMapSgCalls: 1, sgEntries: 1 });
  dma.api.unmapSg(sgl, 64, TO_DEVICE);
  // A list that only partly fits is undone: the slots it took are released.
  const big = sgOf(pages.slice(0, 65));
  assert.equal(dma.api.mapSg(big, TO_DEVICE), 0);
  assert.equal(dma.api.mapSg(sgOf(pages.slice(0, 64)), TO_DEVICE), 64);
  assert.equal(IO_TLB_SIZE, 2048);
});
