/**
 * PATCHv2's bio_split_rw() for a dma-tag bio ("block: add dma tag bio type"):
 * the pages the bio spans, counted from offset_in_page() of its offset into
 * the premapped buffer, are its segments; a bio over max_sectors is split
 * there (max_segments not checked in that branch), else one over
 * max_segments after max_segments pages. Exact request sizes and segment
 * counts against the bvec path on the same queue (MDTS 10: max_sectors 1280
 * KiB, max_segments 127).
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, type Rig, rw } from "./helpers.ts";
import { iovIterBvec, iovIterDmaTag } from "../../sim/block/iov_iter.ts";
import type { BioVec } from "../../sim/block/bvec.ts";
import { NvmeDmaMapping } from "../../sim/nvme/pci.ts";
import { queueMaxSectorsStore } from "../../sim/block/blk-sysfs.ts";

const KIB = 1024;
const MIB = 1 << 20;

/** Each NVMe command's request: bytes and nr_phys_segments, in submission order. */
function recorder(rig: Rig): { len: number; segs: number }[] {
  const out: { len: number; segs: number }[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) out.push({ len: e.rq!.dataLen, segs: e.rq!.nrPhysSegments });
  };
  return out;
}

function premap(rig: Rig, bv: BioVec[]): NvmeDmaMapping {
  const tag = rig.file.fOp.dmaMap!(rig.file, bv);
  assert.ok(tag instanceof NvmeDmaMapping);
  return tag;
}

const rq = (len: number, segs: number) => ({ len, segs });

Deno.test("dma-tag split: 1 MiB premapped is cut at 127 pages, as the bvec path is", () => {
  const rig = makeRig(81, { mdts: 10 });
  assert.equal(rig.host.namespaces[0].bdev.queue.limits.maxSegments, 127);
  const vma = rig.kernel.mm.mmap(4 * MIB);
  const bv = pinBvecs(rig, vma.start, 4 * MIB);
  const tag = premap(rig, bv);
  const got = recorder(rig);
  assert.equal(rw(rig, iovIterBvec("read", bv, MIB), 0n), MIB);
  const bvec = got.splice(0);
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 0, MIB), 0n), MIB);
  const dma = got.splice(0);
  // 256 pages: 127 + 127 + 2 (508 KiB, 508 KiB, 8 KiB). Before: one 1 MiB request.
  assert.deepEqual(dma, [rq(520192, 127), rq(520192, 127), rq(8192, 2)]);
  assert.deepEqual(bvec, dma);
});

Deno.test("dma-tag split: over max_sectors the posted code cuts at 1280 KiB whatever the pages", () => {
  // (v2 without its uninitialised copy counter: the 65-page rest is copied, see posted_bugs_test)
  const rig = makeRig(82, { mdts: 10, bugs: { v2UninitRemaining: false } });
  const vma = rig.kernel.mm.mmap(4 * MIB);
  const bv = pinBvecs(rig, vma.start, 4 * MIB);
  const tag = premap(rig, bv);
  const got = recorder(rig);
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 0, 2 * MIB), 0n), 2 * MIB);
  // bi_size > max_bytes: bytes = max_bytes, nsegs = 320 (> max_segments, unchecked there);
  // the 768 KiB left is 192 pages: 127 of them, then the 65 left.
  assert.deepEqual(got.splice(0), [rq(1280 * KIB, 320), rq(520192, 127), rq(266240, 65)]);
  assert.equal(rw(rig, iovIterBvec("write", bv, 2 * MIB), 0n), 2 * MIB);
  assert.deepEqual(got.splice(0), [...Array(4).fill(rq(520192, 127)), rq(16 * KIB, 4)]);
  // max_sectors_kb as high as it goes: only the segment limit cuts.
  assert.equal(queueMaxSectorsStore(rig.host.namespaces[0].bdev.queue, 4096), 0);
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 0, 4 * MIB), 0n), 4 * MIB);
  assert.deepEqual(got.splice(0), [...Array(8).fill(rq(520192, 127)), rq(32 * KIB, 8)]);
});

Deno.test("dma-tag split: an in-page offset into the buffer counts, rounded to the block size", () => {
  for (
    const [lbaSize, want] of [
      // 1 MiB at 512 spans 257 pages: 127 pages less the 512 lead, then from a page start.
      [512, [rq(519680, 127), rq(520192, 127), rq(8704, 3)]],
      // The same cut aligned down to 4 KiB blocks (516096), so each rest starts at 512 again.
      [4096, [rq(516096, 127), rq(516096, 127), rq(16384, 5)]],
    ] as const
  ) {
    const rig = makeRig(83, {
      mdts: 10,
      namespaces: [{ lbaSize, sizeBytes: 64n * BigInt(MIB) }],
    });
    const vma = rig.kernel.mm.mmap(4 * MIB);
    const tag = premap(rig, pinBvecs(rig, vma.start, 4 * MIB));
    const got = recorder(rig);
    assert.equal(rw(rig, iovIterDmaTag("read", tag, 512, MIB), 0n), MIB);
    assert.deepEqual(got, want, `lba ${lbaSize}`);
  }
});

Deno.test("dma-tag split: the buffer's first offset is not counted (posted): 127 segments over 128 pages", () => {
  const rig = makeRig(84, { mdts: 10 });
  const vma = rig.kernel.mm.mmap(4 * MIB);
  // Registered 512 bytes into its first page: the mapping's first offset is 512.
  const tag = premap(rig, pinBvecs(rig, vma.start + 512n, 4 * MIB - 512));
  assert.equal(tag.firstOffset, 512);
  const got = recorder(rig);
  const prps: bigint[] = [];
  const prev = rig.host.driver.onSubmit!;
  rig.host.driver.onSubmit = (e) => {
    prev(e);
    if (e.qid > 0) prps.push(e.cmd.prp1);
  };
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 0, MIB), 0n), MIB);
  // bi_bvec_done is 0, so the split counts 256 pages and cuts 127 x 4 KiB; the data
  // starts 512 bytes into a page, so the first request really spans 128 pages.
  assert.deepEqual(got, [rq(520192, 127), rq(520192, 127), rq(8192, 2)]);
  assert.equal(prps[0] & 0xfffn, 512n);
  assert.equal(Math.ceil((512 + got[0].len) / 4096), 128);
});
