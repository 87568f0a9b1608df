/**
 * PRP lists at their limits, reachable once MDTS and max_sectors_kb allow
 * transfers up to NVME_MAX_KB_SZ (4 MiB): a list page of 511 entries plus the
 * chain pointer (the entry it displaces moves to the next page), a list that
 * exactly fills the last slot of a page (an entry, not a chain pointer), and
 * the small-pool threshold `nprps <= 256 / 8` at 32 and 33 entries; on the
 * scatterlist path (nvme_pci_setup_prps) and the premapped copy path (the
 * proposal's nvme_premapped_slow), with the device executing each command;
 * and the premapped path's in-place test at the flat array's page end
 * (`prp_list_start >> 12 == prp_list_end >> 12`, the end exclusive).
 */
import assert from "node:assert/strict";
import { assertBytes } from "../device/harness.ts";
import { makeRig, pinBvecs, type Rig, rw } from "../block/helpers.ts";
import { iovIterBvec, iovIterDmaTag } from "../../sim/block/iov_iter.ts";
import { NvmeDmaMapping, type NvmeSubmitEvent } from "../../sim/nvme/pci.ts";
import type { AttachNvmeOptions } from "../../sim/host.ts";
import type { BioVec } from "../../sim/block/bvec.ts";
import { pfnToPhys } from "../../sim/memory/phys.ts";
import { Stats } from "../../sim/stats.ts";
import { queueMaxSectorsStore } from "../../sim/block/blk-sysfs.ts";

const PAGE = 4096;
/** 4 MiB transfers: MDTS 10 (4 MiB) and max_sectors_kb raised to max_hw_sectors_kb. */
const BIG: Partial<AttachNvmeOptions> = { mdts: 10, maxSectorsKb: 4096 };
/** The same with SGLs off: one large segment would otherwise take the SGL path. */
const BIG_PRP: Partial<AttachNvmeOptions> = { ...BIG, sglThreshold: 0 };

function capture(rig: Rig): NvmeSubmitEvent[] {
  const evs: NvmeSubmitEvent[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) {
      evs.push({ ...e, listBlocks: e.listBlocks.map((b) => ({ dma: b.dma, cpu: b.cpu.slice() })) });
    }
  };
  return evs;
}

function u64s(b: Uint8Array, n = b.length / 8): bigint[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  return Array.from({ length: n }, (_, i) => dv.getBigUint64(i * 8, true));
}

/**
 * `npages` physically contiguous frames as one multi-page bvec (one physical
 * segment, so max_segments does not split it), filled with random bytes.
 * With the IOMMU off each PRP entry is the frame's physical address.
 */
function contig(rig: Rig, npages: number): { bv: BioVec[]; base: bigint; data: Uint8Array } {
  const pfn = rig.kernel.phys.allocContig(npages);
  const base = pfnToPhys(pfn);
  const data = new Uint8Array(npages * PAGE);
  rig.kernel.rng.fill(data);
  rig.kernel.phys.write(base, data);
  return { bv: [{ page: rig.kernel.phys.page(pfn)!, offset: 0, len: npages * PAGE }], base, data };
}

/** Expected entries `from..to` (inclusive) of a contiguous run at `base`. */
function run(base: bigint, from: number, to: number): bigint[] {
  return Array.from({ length: to - from + 1 }, (_, i) => base + BigInt((from + i) * PAGE));
}

Deno.test("limits: 4 MiB in one command needs MDTS 10 and max_sectors_kb 4096", () => {
  const rig = makeRig(61, { iommu: "off", ...BIG_PRP });
  const lim = rig.host.namespaces[0].bdev.queue.limits;
  assert.equal(lim.maxHwSectors, 8192);
  assert.equal(lim.maxSectors, 8192);
  assert.equal(lim.maxSegments, 127);
});

Deno.test("setup_prps: 514 pages, a list page of 511 entries + chain, the displaced entry next", () => {
  const rig = makeRig(62, { iommu: "off", ...BIG_PRP });
  const evs = capture(rig);
  const { bv, base, data } = contig(rig, 514);
  const before = rig.kernel.stats.snapshot();
  assert.equal(rw(rig, iovIterBvec("write", bv, 514 * PAGE), 0n), 514 * PAGE);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  assert.equal(evs.length, 1);
  const ev = evs[0];
  assert.equal(ev.path, "prp");
  assert.equal(ev.cmd.prp1, base);
  assert.equal(ev.listBlocks.length, 2);
  assert.equal(ev.cmd.prp2, ev.listBlocks[0].dma);
  assert.deepEqual(ev.listBlocks.map((b) => b.cpu.length), [4096, 4096]);
  const l0 = u64s(ev.listBlocks[0].cpu);
  assert.deepEqual(l0.slice(0, 511), run(base, 1, 511));
  assert.equal(l0[511], ev.listBlocks[1].dma); // the chain pointer in the last slot
  assert.deepEqual(u64s(ev.listBlocks[1].cpu, 3), [...run(base, 512, 513), 0n]);
  assert.equal(d.prpEntries, 513);
  assert.equal(d.prpPoolAllocs, 2);
  assert.equal(d.prpPoolFrees, 2);
  assertBytes(rig.host.controller!.mediaRead(1, 0, 514 * PAGE), data);
});

Deno.test("setup_prps: 513 pages, 512 entries fill the list page to its last slot; no chain", () => {
  const rig = makeRig(63, { iommu: "off", ...BIG_PRP });
  const evs = capture(rig);
  const { bv, base, data } = contig(rig, 513);
  assert.equal(rw(rig, iovIterBvec("write", bv, 513 * PAGE), 0n), 513 * PAGE);
  const ev = evs[0];
  assert.equal(ev.cmd.prp1, base);
  assert.equal(ev.listBlocks.length, 1);
  assert.deepEqual(u64s(ev.listBlocks[0].cpu), run(base, 1, 512));
  assertBytes(rig.host.controller!.mediaRead(1, 0, 513 * PAGE), data);
  // And back: the device fills every page, the last one through the last slot.
  const out = contig(rig, 513);
  assert.equal(rw(rig, iovIterBvec("read", out.bv, 513 * PAGE), 0n), 513 * PAGE);
  const got = new Uint8Array(513 * PAGE);
  rig.kernel.phys.read(out.base, got);
  assertBytes(got, data);
});

Deno.test("setup_prps: 4 MiB, 511 + chain then a second page filled to its last slot", () => {
  const rig = makeRig(64, { iommu: "off", ...BIG_PRP });
  const evs = capture(rig);
  const { bv, base, data } = contig(rig, 1024);
  assert.equal(rw(rig, iovIterBvec("write", bv, 1024 * PAGE), 0n), 1024 * PAGE);
  assert.equal(evs.length, 1);
  const ev = evs[0];
  assert.equal(ev.listBlocks.length, 2);
  const l0 = u64s(ev.listBlocks[0].cpu);
  assert.deepEqual(l0.slice(0, 511), run(base, 1, 511));
  assert.equal(l0[511], ev.listBlocks[1].dma);
  assert.deepEqual(u64s(ev.listBlocks[1].cpu), run(base, 512, 1023));
  assertBytes(rig.host.controller!.mediaRead(1, 0, 1024 * PAGE), data);
});

Deno.test("setup_prps: small pool up to nprps 32 (256 / 8), the page pool from 33", () => {
  // 33 and 34 pages: PRP1 + 32 and PRP1 + 33 list entries (132 and 136 KiB: MDTS 6).
  const rig = makeRig(65, { iommu: "off", mdts: 6 });
  const evs = capture(rig);
  const vma = rig.kernel.mm.mmap(34 * PAGE);
  rig.kernel.rng.fill(vma.bytes);
  const bv = pinBvecs(rig, vma.start, 34 * PAGE);
  const phys = (i: number) => pfnToPhys(bv[i].page.pfn);
  for (const [n, blockBytes] of [[33, 256], [34, 4096]]) {
    const before = rig.kernel.stats.snapshot();
    assert.equal(rw(rig, iovIterBvec("write", bv, n * PAGE), 0n), n * PAGE);
    const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
    const ev = evs.at(-1)!;
    assert.equal(ev.path, "prp");
    assert.equal(ev.cmd.prp1, phys(0));
    assert.equal(ev.listBlocks.length, 1, `${n} pages`);
    assert.equal(ev.listBlocks[0].cpu.length, blockBytes, `${n} pages`);
    assert.deepEqual(
      u64s(ev.listBlocks[0].cpu, n - 1),
      Array.from({ length: n - 1 }, (_, i) => phys(i + 1)),
    );
    assert.equal(d.prpEntries, n - 1);
    assert.equal(d.prpPoolAllocs, 1);
    assertBytes(
      rig.host.controller!.mediaRead(1, 0, n * PAGE),
      vma.bytes.subarray(0, n * PAGE),
    );
  }
});

function premapRig(seed: number, npages: number) {
  // The posted v2 copy loop, its uninitialised remaining-entries counter set right.
  const rig = makeRig(seed, { iommu: "strict", ...BIG, bugs: { v2UninitRemaining: false } });
  const vma = rig.kernel.mm.mmap(npages * PAGE);
  rig.kernel.rng.fill(vma.bytes);
  const tag = rig.file.fOp.dmaMap!(rig.file, pinBvecs(rig, vma.start, npages * PAGE));
  assert.ok(tag instanceof NvmeDmaMapping, `dma_map returned ${tag}`);
  return { rig, vma, tag: tag as NvmeDmaMapping, evs: capture(rig) };
}

const entries = (tag: NvmeDmaMapping, from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => tag.entry(from + i));

/**
 * One premapped command of `pages` pages from entry `first`. PATCHv2's
 * bio_split_rw() cuts a dma-tag bio over 127 pages after 127 of them unless
 * the bio is over max_sectors, where it cuts at max_sectors and does not
 * count pages: so max_sectors_kb is set to the command's size and the I/O
 * made one page longer (that page is a second, PRP1-only command).
 */
function premapIo(
  rig: Rig,
  tag: NvmeDmaMapping,
  dir: "read" | "write",
  first: number,
  pages: number,
): void {
  assert.equal(queueMaxSectorsStore(rig.host.namespaces[0].bdev.queue, pages * 4), 0);
  const len = (pages + 1) * PAGE;
  assert.equal(rw(rig, iovIterDmaTag(dir, tag, first * PAGE, len), 0n), len);
}

Deno.test("premapped_slow: 514 pages, the copy chains after 511 entries, the displaced one next", () => {
  const { rig, vma, tag, evs } = premapRig(66, 515);
  const before = rig.kernel.stats.snapshot();
  premapIo(rig, tag, "write", 0, 514);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  assert.deepEqual(evs.map((e) => e.rq!.dataLen), [514 * PAGE, PAGE]);
  const ev = evs[0];
  assert.equal(ev.path, "premapped");
  assert.equal(ev.cmd.prp1, tag.entry(0));
  assert.equal(ev.listBlocks.length, 2);
  assert.equal(ev.cmd.prp2, ev.listBlocks[0].dma);
  const l0 = u64s(ev.listBlocks[0].cpu);
  assert.deepEqual(l0.slice(0, 511), entries(tag, 1, 511));
  assert.equal(l0[511], ev.listBlocks[1].dma);
  assert.deepEqual(u64s(ev.listBlocks[1].cpu, 3), [...entries(tag, 512, 513), 0n]);
  assert.equal(d.prpEntries, 513);
  assert.equal(d.prpPoolAllocs, 2);
  assert.equal(d.dmaMapSgCalls, 0);
  assertBytes(rig.host.controller!.mediaRead(1, 0, 515 * PAGE), vma.bytes);
});

Deno.test("premapped_slow: 513 pages fill the copied list to its last slot; 1024 fill a second", () => {
  const { rig, vma, tag, evs } = premapRig(67, 1025);
  // 513 pages from entry 0: entries 1..512 cross the flat array's page, so they are copied.
  premapIo(rig, tag, "write", 0, 513);
  assert.deepEqual(evs.map((e) => e.rq!.dataLen), [513 * PAGE, PAGE]);
  assert.equal(evs[0].listBlocks.length, 1);
  assert.deepEqual(u64s(evs[0].listBlocks[0].cpu), entries(tag, 1, 512));
  assertBytes(
    rig.host.controller!.mediaRead(1, 0, 514 * PAGE),
    vma.bytes.subarray(0, 514 * PAGE),
  );
  premapIo(rig, tag, "write", 0, 1024);
  const ev = evs[2];
  assert.equal(ev.rq!.dataLen, 1024 * PAGE);
  assert.equal(ev.listBlocks.length, 2);
  const l0 = u64s(ev.listBlocks[0].cpu);
  assert.deepEqual(l0.slice(0, 511), entries(tag, 1, 511));
  assert.equal(l0[511], ev.listBlocks[1].dma);
  assert.deepEqual(u64s(ev.listBlocks[1].cpu), entries(tag, 512, 1023));
  assertBytes(rig.host.controller!.mediaRead(1, 0, 1025 * PAGE), vma.bytes);
  // Read it back into the same buffer, zeroed first: the device fills every page.
  vma.bytes.fill(0);
  const want = rig.host.controller!.mediaRead(1, 0, 1025 * PAGE);
  premapIo(rig, tag, "read", 0, 1024);
  assert.equal(evs[4].rq!.dataLen, 1024 * PAGE);
  assertBytes(vma.bytes, want);
});

Deno.test("premapped_slow: small pool up to nprps 32 (256 / 8), the page pool from 33", () => {
  const { rig, vma, tag, evs } = premapRig(68, 600);
  // From entry 500 the list entries 501.. cross the flat array's page at 512: copied.
  for (const [n, blockBytes] of [[33, 256], [34, 4096]]) {
    const off = 500 * PAGE;
    assert.equal(rw(rig, iovIterDmaTag("write", tag, off, n * PAGE), 0n), n * PAGE);
    const ev = evs.at(-1)!;
    assert.equal(ev.cmd.prp1, tag.entry(500));
    assert.equal(ev.listBlocks.length, 1, `${n} pages`);
    assert.equal(ev.listBlocks[0].cpu.length, blockBytes, `${n} pages`);
    assert.deepEqual(u64s(ev.listBlocks[0].cpu, n - 1), entries(tag, 501, 500 + n - 1));
    assertBytes(
      rig.host.controller!.mediaRead(1, 0, n * PAGE),
      vma.bytes.subarray(off, off + n * PAGE),
    );
  }
});

Deno.test("premapped in place: a run ending on the array page's last slot is copied (end exclusive)", () => {
  const { rig, vma, tag, evs } = premapRig(69, 600);
  assert.equal(tag.prps.dma % BigInt(PAGE), 0n, "the flat array starts a page");
  // From entry 500: 11 pages list entries 501..510 (one slot short of the page's end), 12 pages
  // end on slot 511, the array page's last, 13 cross into the next page.
  for (const [n, inPlace] of [[11, true], [12, false], [13, false]] as const) {
    const off = 500 * PAGE;
    const before = rig.kernel.stats.snapshot();
    assert.equal(rw(rig, iovIterDmaTag("write", tag, off, n * PAGE), 0n), n * PAGE);
    const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
    const ev = evs.at(-1)!;
    assert.equal(ev.path, "premapped");
    assert.equal(ev.cmd.prp1, tag.entry(500));
    if (inPlace) {
      assert.equal(ev.cmd.prp2, tag.prps.dma + 501n * 8n, `${n} pages: PRP2 into the array`);
      assert.equal(ev.listBlocks.length, 0, `${n} pages`);
      assert.equal(d.prpEntries, 0);
      assert.equal(d.prpPoolAllocs, 0);
    } else {
      assert.equal(ev.listBlocks.length, 1, `${n} pages: copied into a pool list`);
      assert.equal(ev.cmd.prp2, ev.listBlocks[0].dma);
      assert.deepEqual(u64s(ev.listBlocks[0].cpu, n - 1), entries(tag, 501, 500 + n - 1));
      assert.equal(d.prpEntries, n - 1);
      assert.equal(d.prpPoolAllocs, 1);
    }
    assertBytes(
      rig.host.controller!.mediaRead(1, 0, n * PAGE),
      vma.bytes.subarray(off, off + n * PAGE),
    );
  }
});
