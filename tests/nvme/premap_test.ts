/**
 * The proposal's premapped path in nvme-pci: exact PRPs (in place and
 * copied), per-I/O costs against the bvec and ubuf paths, dma_map argument
 * errors, and the published v1 (PAGE_SIZE for PAGE_SHIFT) and v2 (remaining counter) bugs caught by the checking device.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, type Rig, rw } from "../block/helpers.ts";
import { iovIterBvec, iovIterDmaTag, iovIterUbuf } from "../../sim/block/iov_iter.ts";
import { NvmeDev, NvmeDmaMapping, type NvmeSubmitEvent } from "../../sim/nvme/pci.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { Stats } from "../../sim/stats.ts";
import type { BioVec } from "../../sim/block/bvec.ts";
import type { AttachNvmeOptions } from "../../sim/host.ts";
import { Kernel } from "../../sim/kernel.ts";
import { createDma } from "../../sim/dma/mapping.ts";
import { NvmeController } from "../../sim/device/controller.ts";

function capture(rig: Rig): NvmeSubmitEvent[] {
  const evs: NvmeSubmitEvent[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) {
      // Copy the list blocks as they were at submission.
      evs.push({ ...e, listBlocks: e.listBlocks.map((b) => ({ dma: b.dma, cpu: b.cpu.slice() })) });
    }
  };
  return evs;
}

function u64s(b: Uint8Array, n: number): bigint[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  return Array.from({ length: n }, (_, i) => dv.getBigUint64(i * 8, true));
}

function premapRig(
  seed: number,
  bytes: number,
  startOff: number,
  opts: Partial<AttachNvmeOptions> = {},
) {
  const rig = makeRig(seed, { iommu: "strict", ...opts });
  const vma = rig.kernel.mm.mmap(bytes + 4096);
  const bvecs = pinBvecs(rig, vma.start + BigInt(startOff), bytes);
  const tag = rig.file.fOp.dmaMap!(rig.file, bvecs);
  assert.ok(tag instanceof NvmeDmaMapping, `dma_map returned ${tag}`);
  return { rig, vma, bvecs, tag: tag as NvmeDmaMapping };
}

Deno.test("premap: flat array has one entry per page, the first offset remembered", () => {
  const { rig, bvecs, tag } = premapRig(11, 65536, 512);
  assert.equal(bvecs.length, 17);
  assert.equal(tag.nrEntries, 17);
  assert.equal(tag.firstOffset, 512);
  assert.equal(tag.length, 65536);
  for (let i = 0; i < 17; i++) {
    assert.equal(tag.entry(i), tag.maps[i].dma - BigInt(bvecs[i].offset));
  }
  for (let i = 0; i < 17; i++) assert.equal(tag.entry(i) & 0xfffn, 0n);
  rig.file.fOp.dmaUnmap!(rig.file, tag);
  assert.equal(rig.host.driver.liveMappings, 0);
});

Deno.test("premap: PRP2 points straight into the flat array; no sg, no map, no pool, no IOMMU work", () => {
  const { rig, tag } = premapRig(12, 65536, 512);
  const evs = capture(rig);
  const before = rig.kernel.stats.snapshot();
  // Buffer offset 3584 + first offset 512 = 4096: index 1, in-page 0; 16 KiB -> 3 more entries.
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 3584, 16384), 0n), 16384);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  assert.equal(evs.length, 1);
  assert.equal(evs[0].path, "premapped");
  assert.equal(evs[0].cmd.prp1, tag.entry(1));
  assert.equal(evs[0].cmd.prp2, tag.prps.dma + 16n);
  assert.equal(evs[0].listBlocks.length, 0);
  assert.equal(d.sgEntries, 0);
  assert.equal(d.dmaMapSgCalls, 0);
  assert.equal(d.dmaMapPageCalls, 0);
  assert.equal(d.dmaUnmapPageCalls, 0);
  assert.equal(d.iommuPteWrites, 0);
  assert.equal(d.iommuPteClears, 0);
  assert.equal(d.iotlbInvalidations, 0);
  assert.equal(d.prpPoolAllocs, 0);
  assert.equal(d.pagesPinned, 0);
  assert.equal(d.bioVecs, 0);
  assert.equal(d.nvmeCommands, 1);
  assert.equal(d.requests, 1);
});

Deno.test("premap: one or two pages: PRP1 with the in-page offset, PRP2 the next entry or 0", () => {
  const { rig, tag } = premapRig(13, 65536, 512);
  const evs = capture(rig);
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 3584, 4096), 0n), 4096);
  assert.equal(evs[0].cmd.prp1, tag.entry(1));
  assert.equal(evs[0].cmd.prp2, 0n);
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 3584 + 1024, 4096), 0n), 4096);
  assert.equal(evs[1].cmd.prp1, tag.entry(1) + 1024n);
  assert.equal(evs[1].cmd.prp2, tag.entry(2));
});

Deno.test("premap: entries crossing a page of the flat array are copied into a small-pool list", () => {
  // 768 pages: the flat array spans two controller pages (512 entries each).
  const { rig, tag } = premapRig(14, 768 * 4096, 0);
  const evs = capture(rig);
  // Warm the pool so its first page (a coherent allocation) is not charged to the I/O.
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 509 * 4096, 5 * 4096), 0n), 20480);
  evs.length = 0;
  const before = rig.kernel.stats.snapshot();
  // index 509, then 4 entries 510..513 cross the array's page boundary at 512.
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 509 * 4096, 5 * 4096), 0n), 20480);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  const ev = evs[0];
  assert.equal(ev.cmd.prp1, tag.entry(509));
  assert.equal(ev.listBlocks.length, 1);
  assert.equal(ev.cmd.prp2, ev.listBlocks[0].dma);
  assert.equal(ev.listBlocks[0].cpu.length, 256);
  assert.deepEqual(u64s(ev.listBlocks[0].cpu, 4), [510, 511, 512, 513].map((i) => tag.entry(i)));
  assert.equal(d.prpPoolAllocs, 1);
  assert.equal(d.prpPoolFrees, 1);
  assert.equal(d.prpEntries, 4);
  assert.equal(d.dmaMapSgCalls, 0);
  assert.equal(d.iommuPteWrites, 0);
});

Deno.test("premap: a long copied range uses a page-pool list", () => {
  const { rig, tag } = premapRig(15, 768 * 4096, 0, {
    mdts: 7,
    bugs: { v2UninitRemaining: false },
  });
  const evs = capture(rig);
  // index 480, then 63 entries 481..543 cross entry 512.
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 480 * 4096, 64 * 4096), 0n), 64 * 4096);
  const ev = evs[0];
  assert.equal(ev.cmd.prp1, tag.entry(480));
  assert.equal(ev.listBlocks.length, 1);
  assert.equal(ev.listBlocks[0].cpu.length, 4096);
  assert.deepEqual(
    u64s(ev.listBlocks[0].cpu, 63),
    Array.from({ length: 63 }, (_, i) => tag.entry(481 + i)),
  );
});

Deno.test("per-I/O costs: ubuf pins and maps, bvec maps without pinning, dmatag does neither", () => {
  const rig = makeRig(16, { iommu: "strict" });
  const vma = rig.kernel.mm.mmap(65536);
  const bvecs = pinBvecs(rig, vma.start, 65536);
  const tag = rig.file.fOp.dmaMap!(rig.file, bvecs) as NvmeDmaMapping;
  const cost = (f: () => void) => {
    const b = rig.kernel.stats.snapshot();
    f();
    return Stats.diff(b, rig.kernel.stats.snapshot()).counters;
  };
  const u = cost(() => assert.equal(rw(rig, iovIterUbuf("read", vma.start, 16384), 0n), 16384));
  assert.equal(u.pagesPinned, 4);
  assert.equal(u.pagesUnpinned, 4);
  assert.equal(u.bioVecs, 4);
  assert.equal(u.dmaMapSgCalls, 1);
  assert.equal(u.dmaUnmapSgCalls, 1);
  assert.equal(u.sgEntries, 4);
  assert.equal(u.prpPoolAllocs, 1);
  const b = cost(() => assert.equal(rw(rig, iovIterBvec("read", bvecs, 16384), 0n), 16384));
  assert.equal(b.pagesPinned, 0);
  assert.equal(b.bioVecs, 0);
  assert.equal(b.dmaMapSgCalls, 1);
  assert.equal(b.sgEntries, 4);
  assert.equal(b.prpPoolAllocs, 1);
  assert.ok(b.iommuPteWrites > 0);
  const t = cost(() => assert.equal(rw(rig, iovIterDmaTag("read", tag, 0, 16384), 0n), 16384));
  assert.equal(t.pagesPinned, 0);
  assert.equal(t.dmaMapSgCalls, 0);
  assert.equal(t.dmaMapPageCalls, 0);
  assert.equal(t.sgEntries, 0);
  assert.equal(t.prpPoolAllocs, 0);
  assert.equal(t.iommuPteWrites, 0);
  assert.equal(t.iotlbInvalidations, 0);
  // A single page uses the one-segment fast path: one dma_map_page, no pool.
  const s = cost(() => assert.equal(rw(rig, iovIterBvec("read", bvecs, 4096), 0n), 4096));
  assert.equal(s.dmaMapPageCalls, 1);
  assert.equal(s.dmaMapSgCalls, 0);
  assert.equal(s.prpPoolAllocs, 0);
});

Deno.test("dma_map: non-contiguous buffers are -EINVAL; a driver without dma_map is -EINVAL", () => {
  const rig = makeRig(17, { iommu: "lazy" });
  const vma = rig.kernel.mm.mmap(4 * 4096);
  const bv = pinBvecs(rig, vma.start, 4 * 4096);
  const map = (b: BioVec[]) => rig.file.fOp.dmaMap!(rig.file, b);
  assert.equal(map([]), -Errno.EINVAL);
  // An offset in a middle bvec.
  assert.equal(map([bv[0], { ...bv[1], offset: 512, len: 3584 }, bv[2]]), -Errno.EINVAL);
  // A middle bvec that does not end on a page boundary.
  assert.equal(map([bv[0], { ...bv[1], len: 2048 }, bv[2]]), -Errno.EINVAL);
  // A first bvec with an offset that does not reach the page end.
  assert.equal(map([{ ...bv[0], offset: 512, len: 1024 }, bv[1]]), -Errno.EINVAL);
  // First with offset to page end, last partial: fine.
  const ok = map([{ ...bv[0], offset: 512, len: 3584 }, bv[1], { ...bv[2], len: 100 }]);
  assert.ok(ok instanceof NvmeDmaMapping);
  assert.equal(rig.kernel.stats.counters.iommuFaults, 0);
  rig.file.fOp.dmaUnmap!(rig.file, ok as NvmeDmaMapping);
  const no = makeRig(18, { iommu: "lazy", dmaMapSupported: false });
  const v2 = no.kernel.mm.mmap(4096);
  assert.equal(no.file.fOp.dmaMap!(no.file, pinBvecs(no, v2.start, 4096)), -Errno.EINVAL);
});

Deno.test("v1 bug: pages per host page from PAGE_SIZE; the device's DMA faults, -EIO", () => {
  // No IOMMU: the wrong entry is the frame after page 0, which is not allocated.
  const { rig, tag } = premapRig(19, 2 * 4096, 0, { iommu: "off", bugs: { v1PageShift: true } });
  assert.equal(tag.nrEntries, 2);
  assert.equal(tag.entry(1), tag.entry(0) + 4096n); // not the second page's address
  const before = rig.kernel.stats.snapshot();
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 4096, 4096), 0n), -Errno.EIO);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  assert.equal(d.nvmeCommands, 6); // the first try and nvme_max_retries (5)
  assert.equal(d.deviceErrors, 6);
  // The first page's entry is right, so an I/O inside it still works.
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 0, 4096), 0n), 4096);
});

Deno.test("v2 bug: remaining counter read before set; the device rejects the empty list", () => {
  const seed = 20;
  const { rig, tag } = premapRig(seed, 768 * 4096, 0, {
    bugs: { v2UninitRemaining: true },
    maxRetries: 0,
  });
  const src = rig.kernel.mm.mmap(4096);
  void src;
  const before = rig.kernel.stats.snapshot();
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 509 * 4096, 5 * 4096), 0n), -Errno.EIO);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  assert.equal(d.deviceErrors, 1);
  assert.equal(d.prpPoolAllocs, d.prpPoolFrees);
  // With retries (the default), the second attempt reads the now-set counter and succeeds.
  const r2 = premapRig(seed + 1, 768 * 4096, 0, { bugs: { v2UninitRemaining: true } });
  const b2 = r2.rig.kernel.stats.snapshot();
  assert.equal(rw(r2.rig, iovIterDmaTag("write", r2.tag, 509 * 4096, 5 * 4096), 0n), 20480);
  const d2 = Stats.diff(b2, r2.rig.kernel.stats.snapshot()).counters;
  assert.equal(d2.deviceErrors, 1);
  assert.equal(r2.rig.host.driver.retriedCommands, 1);
});

/** Start a premapped 8 KiB read (in flight: the device runs only when the kernel polls). */
function startRead(rig: Rig, tag: NvmeDmaMapping): { res: () => number | undefined } {
  let res: number | undefined;
  const r = rig.file.fOp.readIter!(
    { file: rig.file, pos: 0n, flags: 1 << 17, complete: (x) => (res = x) },
    iovIterDmaTag("read", tag, 0, 8192),
  );
  assert.equal(r, -Errno.EIOCBQUEUED);
  return { res: () => res };
}

Deno.test("premap (v2): unmap while I/O is in flight frees at once; the device faults, -EIO", () => {
  const { rig, tag } = premapRig(22, 8192, 0);
  assert.equal(rig.kernel.premap, "v2");
  const io = startRead(rig, tag);
  rig.file.fOp.dmaUnmap!(rig.file, tag);
  assert.equal(tag.freed, true, "nvme_pci_dma_unmap does not wait");
  assert.equal(rig.host.driver.liveMappings, 0);
  rig.kernel.runUntil(() => io.res() !== undefined);
  assert.equal(io.res(), -Errno.EIO);
  assert.ok(rig.kernel.stats.counters.iommuFaults > 0, "PRP1's IOVA is no longer mapped");
  assert.equal(rig.host.driver.liveMappings, 0);
});

Deno.test("premap (hardened): unmap while I/O is in flight frees after completion", () => {
  const { rig, tag } = premapRig(22, 8192, 0);
  rig.kernel.premap = "hardened";
  const io = startRead(rig, tag);
  rig.file.fOp.dmaUnmap!(rig.file, tag);
  assert.equal(tag.freed, false);
  assert.equal(rig.host.driver.liveMappings, 1);
  rig.kernel.runUntil(() => io.res() !== undefined);
  assert.equal(io.res(), 8192);
  assert.equal(tag.freed, true);
  assert.equal(rig.host.driver.liveMappings, 0);
});

Deno.test("dma_map: bvecs are checked as they are mapped; -EINVAL unmaps what this call mapped", () => {
  const rig = makeRig(23, { iommu: "strict" });
  const vma = rig.kernel.mm.mmap(4 * 4096);
  const bv = pinBvecs(rig, vma.start, 4 * 4096);
  const map = (b: BioVec[]) => {
    const before = rig.kernel.stats.snapshot();
    const r = rig.file.fOp.dmaMap!(rig.file, b);
    const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
    return { r, maps: d.dmaMapPageCalls, unmaps: d.dmaUnmapPageCalls };
  };
  // The third bvec starts at an offset: the first two were mapped, then unmapped.
  assert.deepEqual(map([bv[0], bv[1], { ...bv[2], offset: 512, len: 3584 }, bv[3]]), {
    r: -Errno.EINVAL,
    maps: 2,
    unmaps: 2,
  });
  // The second bvec ends short of its page: found before it is mapped.
  assert.deepEqual(map([bv[0], { ...bv[1], len: 2048 }, bv[2]]), {
    r: -Errno.EINVAL,
    maps: 1,
    unmaps: 1,
  });
  // The first bvec does not reach its page end: nothing mapped.
  assert.deepEqual(map([{ ...bv[0], offset: 512, len: 1024 }, bv[1]]), {
    r: -Errno.EINVAL,
    maps: 0,
    unmaps: 0,
  });
  assert.equal(rig.host.driver.liveMappings, 0);
  assert.equal(rig.kernel.stats.counters.iommuFaults, 0);
});

Deno.test("dma_map: a page that fails to map is -EIO (the patch's errno), the rest unwound", () => {
  const kernel = new Kernel({ seed: 24, timing: false });
  // 128 swiotlb slots of 2 KiB (one IO_TLB_SEGSIZE segment): room for 64 bounced pages.
  using dma = createDma(kernel, { mode: "bounce", swiotlbSlots: 128 });
  const ctrl = new NvmeController(dma.port, { seed: 24 }, kernel.stats);
  kernel.addPoller(ctrl);
  using drv = new NvmeDev(kernel, ctrl, dma.api);
  assert.equal(drv.probe(), 0);
  const q = drv.namespaces[0].queue;
  const vma = kernel.mm.mmap(70 * 4096);
  const pin = kernel.mm.pinUserPages(vma.start, 70 * 4096);
  assert.ok(typeof pin !== "number");
  const bvecs: BioVec[] = pin.pages.map((page) => ({ page, offset: 0, len: 4096 }));
  const before = kernel.stats.snapshot();
  const r = drv.dmaMap(q, bvecs);
  assert.equal(typeof r === "number" ? r : "tag", -Errno.EIO);
  const d = Stats.diff(before, kernel.stats.snapshot()).counters;
  assert.equal(d.dmaMapPageCalls, 65);
  assert.equal(d.dmaUnmapPageCalls, 64);
  assert.equal(drv.liveMappings, 0);
  // Every slot came back: 64 pages map now.
  const tag = drv.dmaMap(q, bvecs.slice(0, 64));
  assert.ok(tag instanceof NvmeDmaMapping);
  assert.equal(tag.needSync, true);
  drv.dmaUnmap(q, tag);
  kernel.removePoller(ctrl);
});

Deno.test("premap hardened under swiotlb: each I/O syncs exactly the bytes it touches", () => {
  const { rig, vma, tag } = premapRig(25, 65536, 512, { iommu: "bounce" });
  rig.kernel.premap = "hardened";
  assert.equal(tag.needSync, true);
  const user = vma.bytes.subarray(512, 512 + 65536);
  rig.kernel.rng.fill(user);
  const want = user.slice(4608, 4608 + 8192);
  const cost = (f: () => void) => {
    const b = rig.kernel.stats.snapshot();
    f();
    return Stats.diff(b, rig.kernel.stats.snapshot()).counters;
  };
  // Buffer offset 4608 + first offset 512 = 5120: index 1, in-page 1024; 8 KiB touches
  // 3072 bytes of entry 1, all of entry 2, 1024 bytes of entry 3.
  const w = cost(() => assert.equal(rw(rig, iovIterDmaTag("write", tag, 4608, 8192), 0n), 8192));
  assert.equal(w.dmaSyncs, 3);
  assert.equal(w.bounceBytes, 8192);
  assert.equal(w.dmaMapPageCalls, 0);
  user.fill(0);
  const r = cost(() => assert.equal(rw(rig, iovIterDmaTag("read", tag, 4608, 8192), 0n), 8192));
  assert.equal(r.dmaSyncs, 3);
  assert.equal(r.bounceBytes, 8192);
  assert.deepEqual(user.subarray(4608, 4608 + 8192), want);
  // Bytes outside the I/O were not copied back over.
  assert.ok(user.subarray(0, 4608).every((b) => b === 0));
  assert.ok(user.subarray(4608 + 8192).every((b) => b === 0));
});
