/**
 * The DMA-API debug checker (sim/dma/debug.ts), one check per test: each
 * asserts the exact event kind, its count, the host counters, and the
 * kernel's words in the message.
 */
import assert from "node:assert/strict";
import { createDma, type Dma } from "../../sim/dma/mapping.ts";
import { DMA_DEBUG_KINDS, DMA_DEBUG_MAX_EVENTS, type DmaDebugKind } from "../../sim/dma/debug.ts";
import { DmaDirection, isDmaFault } from "../../sim/dma/types.ts";
import type { Kernel } from "../../sim/kernel.ts";
import { KERNEL_QUARANTINE_FRAMES, PAGE_SIZE, POISON_FREE } from "../../sim/memory/phys.ts";
import { newKernel, sgOf, userPages } from "./_helpers.ts";

const { BIDIRECTIONAL: BIDI, TO_DEVICE, FROM_DEVICE } = DmaDirection;

/** Every per-kind counter: `want` as given, every other kind 0. */
function assertCounts(dma: Dma, want: Partial<Record<DmaDebugKind, number>>): void {
  const all = Object.fromEntries(DMA_DEBUG_KINDS.map((k) => [k, want[k] ?? 0]));
  assert.deepEqual(dma.debug!.counts, all);
}

/** The one event logged, and the host's error counter agrees. */
function onlyEvent(k: Kernel, dma: Dma) {
  assert.equal(dma.debug!.events.length, 1);
  assert.equal(k.stats.counters.dmaDebugErrors, 1);
  return dma.debug!.events[0];
}

Deno.test("debug: unmap with a different size (the posted nvme_pci_dma_unmap length)", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off", device: "nvme0" });
  const [p] = userPages(k, 1);
  // A registered buffer that starts 512 bytes into its page and ends inside it: mapped length
  // 1024; the posted unmap passes PAGE_SIZE - offset_in_page(handle) = 3584.
  const h = dma.api.mapPage(p, 512, 1024, BIDI);
  dma.api.unmapPage(h, PAGE_SIZE - Number(h & 0xfffn), BIDI);
  assertCounts(dma, { "free-size": 1 });
  const e = onlyEvent(k, dma);
  assert.equal(e.handle, h);
  assert.equal(e.size, 3584);
  assert.equal(e.direction, BIDI);
  assert.equal(e.device, "nvme0");
  assert.equal(
    e.message,
    `DMA-API: nvme0: device driver frees DMA memory with different size ` +
      `[device address=0x${
        h.toString(16).padStart(16, "0")
      }] [map size=1024 bytes] [unmap size=3584 bytes]`,
  );
  assert.equal(dma.debug!.liveMappings, 0); // the entry is gone, as in the kernel
});

Deno.test("debug: unmap with a different direction", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  const [p] = userPages(k, 1);
  const h = dma.api.mapPage(p, 0, 4096, TO_DEVICE);
  dma.api.unmapPage(h, 4096, FROM_DEVICE);
  assertCounts(dma, { "free-direction": 1 });
  assert.match(
    onlyEvent(k, dma).message,
    /frees DMA memory with different direction .* \[mapped with DMA_TO_DEVICE\] \[unmapped with DMA_FROM_DEVICE\]$/,
  );
});

Deno.test("debug: unmap of a handle never mapped", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off" });
  dma.api.unmapPage(0x1234_5000n, 4096, BIDI);
  assertCounts(dma, { "free-not-allocated": 1 });
  assert.match(
    onlyEvent(k, dma).message,
    /device driver tries to free DMA memory it has not allocated \[device address=0x0000000012345000\] \[size=4096 bytes\]$/,
  );
});

Deno.test("debug: unmap twice", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off" });
  const [p] = userPages(k, 1);
  const h = dma.api.mapPage(p, 0, 4096, BIDI);
  dma.api.unmapPage(h, 4096, BIDI);
  assertCounts(dma, {});
  dma.api.unmapPage(h, 4096, BIDI);
  assertCounts(dma, { "double-free": 1 });
  assert.match(onlyEvent(k, dma).message, /has not allocated .*\(already unmapped: single/);
});

Deno.test("debug: unmap_page of a scatter-gather entry is the wrong function", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off" });
  const sgl = sgOf(userPages(k, 2));
  assert.equal(dma.api.mapSg(sgl, BIDI), 2);
  dma.api.unmapPage(sgl[0].dmaAddress, sgl[0].dmaLength, BIDI);
  assertCounts(dma, { "free-type": 1 });
  assert.match(onlyEvent(k, dma).message, /\[mapped as scatter-gather\] \[unmapped as single\]$/);
  // The rest of the list unmapped with another nents: counted per segment checked.
  dma.api.unmapSg(sgl.slice(1), 1, BIDI);
  assertCounts(dma, { "free-type": 1, "free-sg-count": 1 });
});

Deno.test("debug: sync outside a mapping, past its end, and with another direction", () => {
  const k = newKernel();
  // The checks run before the backend (off: syncs are no-ops, so nothing else objects).
  using dma = createDma(k, { mode: "off" });
  const [p] = userPages(k, 1);
  const h = dma.api.mapPage(p, 0, 2048, FROM_DEVICE);
  dma.api.syncSingleForCpu(h + 1024n, 1024, FROM_DEVICE); // inside: fine
  assertCounts(dma, {});
  dma.api.syncSingleForCpu(h + 0x10_0000n, 512, FROM_DEVICE);
  assertCounts(dma, { "sync-not-allocated": 1 });
  assert.match(
    dma.debug!.events[0].message,
    /device driver tries to sync DMA memory it has not allocated \[device address=.*\] \[size=512 bytes\]$/,
  );
  dma.api.syncSingleForCpu(h + 1024n, 2048, FROM_DEVICE);
  assertCounts(dma, { "sync-not-allocated": 1, "sync-outside-range": 1 });
  assert.match(
    dma.debug!.events[1].message,
    /syncs DMA memory outside allocated range .* \[allocation size=2048 bytes\] \[sync offset\+size=3072\]$/,
  );
  dma.api.syncSingleForDevice(h, 2048, TO_DEVICE);
  assertCounts(dma, {
    "sync-not-allocated": 1,
    "sync-outside-range": 1,
    "sync-direction": 1,
    "sync-write-only-to-device": 1,
  });
  assert.equal(k.stats.counters.dmaDebugErrors, 4);
  dma.api.unmapPage(h, 2048, FROM_DEVICE);
});

Deno.test("debug: a mapping never unmapped is a leak at teardown", () => {
  const k = newKernel();
  const dma = createDma(k, { mode: "lazy", device: "nvme0" });
  const [a, b] = userPages(k, 2);
  const h = dma.api.mapPage(a, 256, 512, TO_DEVICE);
  dma.api.unmapPage(dma.api.mapPage(b, 0, 4096, BIDI), 4096, BIDI);
  const pool = dma.api.createPool("prp list page", 4096, 4096, 0);
  pool.free(pool.alloc()!); // pool pages are the DMA layer's to release, not a leak
  dma[Symbol.dispose]();
  assertCounts(dma, { leak: 1 });
  const e = onlyEvent(k, dma);
  assert.equal(e.handle, h);
  assert.equal(e.size, 512);
  assert.equal(
    e.message,
    `DMA-API: nvme0: device driver has pending DMA allocations while released from device ` +
      `[count=1] One of leaked entries details: [device address=0x${
        h.toString(16).padStart(16, "0")
      }] [size=512 bytes] [mapped with DMA_TO_DEVICE] [mapped as single]`,
  );
});

/**
 * A kernel page mapped for the device, unmapped, freed, and handed to a new
 * owner; then the device reads the stale handle. Returns the read's result.
 */
function staleRead(k: Kernel, dma: Dma) {
  const pfn = k.phys.allocContig(1);
  const h = dma.api.mapPage(k.phys.page(pfn)!, 0, 4096, BIDI);
  assert.equal(dma.port.write(h, new Uint8Array(4096).fill(0xaa)), null);
  dma.api.unmapPage(h, 4096, BIDI);
  k.phys.freeContig(pfn, 1);
  // Freed and in quarantine: the frame is still RAM, poisoned (POISON_FREE).
  const read = dma.port.read(h, 4096);
  const poisoned = isDmaFault(read) ? read : read.slice();
  // Push it out of the quarantine: the next one-frame kernel allocation gets it again.
  const filler = k.phys.allocContig(KERNEL_QUARANTINE_FRAMES);
  k.phys.freeContig(filler, KERNEL_QUARANTINE_FRAMES);
  const reused = k.phys.allocContig(1);
  assert.equal(reused, pfn);
  k.phys.page(reused)!.data.fill(0x5a); // the new owner's data
  return { h, poisoned, r: dma.port.read(h, 4096) };
}

Deno.test("debug: no IOMMU, the device reads an unmapped-then-freed page: counted with its bytes", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off" });
  const { h, poisoned, r } = staleRead(k, dma);
  assert.ok(!isDmaFault(poisoned) && poisoned.every((b) => b === POISON_FREE));
  assert.ok(!isDmaFault(r) && r[0] === 0x5a, "the read reached the new owner's memory");
  assertCounts(dma, { "device-unmapped-access": 2 });
  assert.equal(k.stats.counters.dmaDebugDeviceUnmappedBytes, 8192);
  assert.equal(dma.debug!.deviceUnmappedBytes, 8192);
  for (const e of dma.debug!.events) {
    assert.equal(e.handle, h);
    assert.equal(e.size, 4096);
    assert.match(
      e.message,
      /device read from unmapped DMA address .* \[unmapped bytes=4096\] \[unmapped: was single DMA_BIDIRECTIONAL/,
    );
  }
  // Coherent memory is mapped for its whole life: the device's accesses to it are never reported.
  const buf = dma.api.allocCoherent(8192)!;
  assert.equal(dma.port.write(buf.dma + 4000n, new Uint8Array(200)), null);
  dma.api.freeCoherent(buf);
  assert.equal(dma.debug!.events.length, 2);
});

Deno.test("debug: strict IOMMU, the same stale read faults and the checker reports nothing", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "strict" });
  const faults0 = k.stats.counters.iommuFaults;
  const { h, poisoned, r } = staleRead(k, dma);
  assert.deepEqual(poisoned, { addr: h, reason: "unmapped" });
  assert.deepEqual(r, { addr: h, reason: "unmapped" });
  assert.equal(k.stats.counters.iommuFaults - faults0, 2);
  assertCounts(dma, {});
  assert.equal(k.stats.counters.dmaDebugDeviceUnmappedBytes, 0);
});

Deno.test("debug: a device access partly outside a mapping counts only the uncovered bytes", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "passthrough" });
  const [p] = userPages(k, 1);
  const h = dma.api.mapPage(p, 1024, 1024, FROM_DEVICE);
  assert.equal(dma.port.write(h - 100n, new Uint8Array(1224)), null);
  assertCounts(dma, { "device-unmapped-access": 1 });
  assert.equal(dma.debug!.events[0].size, 200);
  assert.equal(dma.debug!.events[0].handle, h - 100n);
  assert.match(dma.debug!.events[0].message, /device write to unmapped .*\[never mapped\]$/);
  dma.api.unmapPage(h, 1024, FROM_DEVICE);
});

Deno.test("debug: the event log is bounded, the counters are not", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off" });
  for (let i = 0; i < DMA_DEBUG_MAX_EVENTS + 10; i++) {
    dma.api.unmapPage(0x10_0000n + BigInt(i) * 4096n, 4096, BIDI);
  }
  assert.equal(dma.debug!.events.length, DMA_DEBUG_MAX_EVENTS);
  assert.equal(dma.debug!.counts["free-not-allocated"], DMA_DEBUG_MAX_EVENTS + 10);
  assert.equal(dma.debug!.events[0].handle, 0x10_0000n + 10n * 4096n);
});

Deno.test("debug: off for benchmarks, nothing recorded", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "off", debug: false });
  assert.equal(dma.debug, undefined);
  dma.api.unmapPage(0x1000n, 4096, BIDI);
  assert.equal(k.stats.counters.dmaDebugErrors, 0);
});
