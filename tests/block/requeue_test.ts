/**
 * BLK_STS_RESOURCE: a request the driver cannot map now waits on the dispatch
 * list and is retried (a completion, or BLK_MQ_RESOURCE_DELAY with nothing in
 * flight) until it goes; one that nothing can ever satisfy (every swiotlb slot
 * held by long-lived premapped buffers) is reported hung after the hung-task
 * timeout and failed with -ETIMEDOUT, never -ENOMEM.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, rw } from "./helpers.ts";
import { iovIterUbuf } from "../../sim/block/iov_iter.ts";
import { BLK_MQ_RESOURCE_DELAY_NS, HUNG_TASK_TIMEOUT_NS } from "../../sim/block/blk-mq.ts";
import { NvmeDmaMapping } from "../../sim/nvme/pci.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { DmaDirection } from "../../sim/dma/types.ts";
import { IOCB, type Kiocb } from "../../sim/fs/file.ts";

const P = 4096;

Deno.test("swiotlb starved by a premapped buffer: normal I/O retries every 3 ms, is reported hung at 120 s, and runs once the buffer is unmapped", () => {
  // 128 slots of 2 KiB: 256 KiB of bounce space; a premapped 192 KiB buffer holds 96.
  const rig = makeRig(91, { iommu: "bounce", swiotlbSlots: 128 });
  const k = rig.kernel;
  const pre = k.mm.mmap(48 * P);
  const tag = rig.file.fOp.dmaMap!(rig.file, pinBvecs(rig, pre.start, 48 * P));
  assert.ok(tag instanceof NvmeDmaMapping);
  assert.equal(rig.host.dmaSetup.swiotlb!.usedSlots, 96);
  const buf = k.mm.mmap(32 * P);
  const t0 = k.clock.nowNs();
  const s0 = k.stats.snapshot();
  // 128 KiB as 32 one-page segments needs 64 slots; 32 are free.
  assert.equal(rw(rig, iovIterUbuf("read", buf.start, 32 * P), 0n), -Errno.ETIMEDOUT);
  const waited = k.clock.nowNs() - t0;
  assert.ok(
    waited >= HUNG_TASK_TIMEOUT_NS && waited < HUNG_TASK_TIMEOUT_NS + 2 * BLK_MQ_RESOURCE_DELAY_NS,
  );
  assert.equal(k.stats.counters.requestsHung - s0.counters.requestsHung, 1);
  assert.equal(rig.host.driver.tagSet!.hungRequests, 1);
  // Each retry mapped what fit, failed, and undid it: no slot leaked, no command sent.
  assert.equal(rig.host.dmaSetup.swiotlb!.usedSlots, 96);
  assert.equal(k.stats.counters.nvmeCommands - s0.counters.nvmeCommands, 0);
  // The long-lived mapping goes: the same I/O maps and completes.
  rig.file.fOp.dmaUnmap!(rig.file, tag);
  assert.equal(rw(rig, iovIterUbuf("read", buf.start, 32 * P), 0n), 32 * P);
});

Deno.test("swiotlb full for 10 ms with nothing in flight: the request is re-run after BLK_MQ_RESOURCE_DELAY and completes", () => {
  const rig = makeRig(92, { iommu: "bounce", swiotlbSlots: 128 });
  const k = rig.kernel;
  // Another user of the pool holds every slot (64 pages, 2 slots each) for 10 ms.
  const held = k.phys.allocUserFrames(64);
  const addrs = held.map((p) => rig.host.dma.mapPage(p, 0, P, DmaDirection.TO_DEVICE));
  assert.equal(rig.host.dmaSetup.swiotlb!.usedSlots, 128);
  k.addTimer(10e6, () => {
    for (const a of addrs) rig.host.dma.unmapPage(a, P, DmaDirection.TO_DEVICE);
  });
  const src = k.mm.mmap(4 * P);
  src.bytes.fill(0x5c);
  const t0 = k.clock.nowNs();
  const s0 = k.stats.snapshot();
  assert.equal(rw(rig, iovIterUbuf("write", src.start, 4 * P), 0n), 4 * P);
  const waited = k.clock.nowNs() - t0;
  // Re-runs at 3, 6, 9 ms fail; the one at 12 ms finds the slots free.
  assert.equal(waited, 4 * BLK_MQ_RESOURCE_DELAY_NS);
  assert.equal(k.stats.counters.requestsHung - s0.counters.requestsHung, 0);
  const dst = k.mm.mmap(4 * P);
  assert.equal(rw(rig, iovIterUbuf("read", dst.start, 4 * P), 0n), 4 * P);
  assert.ok(dst.bytes.every((b) => b === 0x5c));
});

Deno.test("examples/swiotlb_starvation.ts: ordinary I/O runs until premapped buffers hold every bounce slot", async () => {
  const { measure, STEPS, SIZES } = await import("../../examples/swiotlb_starvation.ts");
  const rows = measure();
  assert.deepEqual(rows.map((r) => r.premappedMib), STEPS);
  for (const r of rows) {
    assert.equal(r.freeKib, (64 - r.premappedMib) * 1024);
    const want = r.premappedMib < 64 ? SIZES : SIZES.map(() => -Errno.ETIMEDOUT);
    assert.deepEqual(r.results, want, `${r.premappedMib} MiB premapped`);
  }
});

Deno.test("IOVA space exhausted (a 1 MiB DMA mask) by a premapped buffer: normal I/O waits, is reported hung, runs after the unmap", () => {
  // Strict IOMMU, DMA mask 20 bits: 256 pages of IOVA space below 1 MiB.
  const rig = makeRig(93, { iommu: "strict", dmaMaskBits: 20 });
  const k = rig.kernel;
  const s0 = k.stats.snapshot();
  // The driver's own coherent memory takes a few pages; a 200-page premapped buffer most of
  // the rest, one IOVA per page.
  const pre = k.mm.mmap(200 * P);
  const tag = rig.file.fOp.dmaMap!(rig.file, pinBvecs(rig, pre.start, 200 * P));
  assert.ok(tag instanceof NvmeDmaMapping, `dma_map: ${tag}`);
  const buf = k.mm.mmap(64 * P);
  // 256 KiB as two 128 KiB commands of 32 pages: each needs 32 contiguous IOVA pages.
  assert.equal(rw(rig, iovIterUbuf("read", buf.start, 64 * P), 0n), -Errno.ETIMEDOUT);
  // Both commands waited on the dispatch list and were reported hung.
  assert.equal(k.stats.counters.requestsHung - s0.counters.requestsHung, 2);
  rig.file.fOp.dmaUnmap!(rig.file, tag);
  assert.equal(rw(rig, iovIterUbuf("read", buf.start, 64 * P), 0n), 64 * P);
});

Deno.test("PRP page pool exhausted (one page) by an I/O in flight: the second waits on the dispatch list and completes after it", () => {
  // MDTS 7 (512 KiB): a 256 KiB command has 63 list entries, so its list is a page-pool page.
  const rig = makeRig(94, { iommu: "strict", mdts: 7, prpPoolMaxPages: 1 });
  const k = rig.kernel;
  const a = k.mm.mmap(64 * P), b = k.mm.mmap(64 * P);
  const results: number[] = [];
  for (const v of [a, b]) {
    const iocb: Kiocb = {
      file: rig.file,
      pos: 0n,
      flags: IOCB.DIRECT,
      complete: (r) => results.push(r),
    };
    assert.equal(
      rig.file.fOp.readIter!(iocb, iovIterUbuf("read", v.start, 64 * P)),
      -Errno.EIOCBQUEUED,
    );
  }
  // The second could not get a list page while the first held it: it waits, not -ENOMEM.
  assert.equal(rig.host.driver.tagSet!.hctxs[0].dispatch.length, 1);
  k.runUntil(() => results.length === 2);
  assert.deepEqual(results, [64 * P, 64 * P]);
  assert.equal(k.stats.counters.requestsHung, 0);
});
