/**
 * What 6.0 merges into one bio_vec and one scatterlist entry, and what it
 * does not: __bio_try_merge_page() joins a user page's data to the last
 * bio_vec when it continues it physically (READV pieces in one page, with
 * the extra page reference dropped at once); blk_rq_map_sg() joins entries
 * only across bios, never two bio_vecs of one bio.
 */
import assert from "node:assert/strict";
import { makeRig, type Rig, rw } from "./helpers.ts";
import { iovIterBvec, iovIterIovec } from "../../sim/block/iov_iter.ts";
import type { BioVec } from "../../sim/block/bvec.ts";
import { bioInit } from "../../sim/block/bio.ts";
import { blkRqMapSg } from "../../sim/block/blk-merge.ts";
import { Stats } from "../../sim/stats.ts";
import type { NvmeSubmitEvent } from "../../sim/nvme/pci.ts";

const PAGE = 4096;

function submits(rig: Rig): NvmeSubmitEvent[] {
  const out: NvmeSubmitEvent[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) out.push(e);
  };
  return out;
}

function measure(rig: Rig, f: () => void) {
  const before = rig.kernel.stats.snapshot();
  f();
  return Stats.diff(before, rig.kernel.stats.snapshot()).counters;
}

const SMALL_LBA = { namespaces: [{ lbaSize: 512 as const, sizeBytes: 4n << 20n }] };

Deno.test("READV: two iovecs meeting inside a page are one bio_vec and one PRP-simple command", () => {
  const rig = makeRig(91, SMALL_LBA);
  const evs = submits(rig);
  const vma = rig.kernel.mm.mmap(2 * PAGE);
  rig.kernel.rng.fill(vma.bytes);
  const iov = [{ base: vma.start, len: 2048 }, { base: vma.start + 2048n, len: 2048 }];
  const d = measure(rig, () => assert.equal(rw(rig, iovIterIovec("write", iov), 0n), 4096));
  assert.deepEqual(evs.map((e) => [e.path, e.rq!.nrPhysSegments]), [["prp-simple", 1]]);
  assert.deepEqual(
    {
      bioVecs: d.bioVecs,
      pagesPinned: d.pagesPinned,
      pagesUnpinned: d.pagesUnpinned,
      nvmeCommands: d.nvmeCommands,
      sgEntries: d.sgEntries,
      dmaMapPageCalls: d.dmaMapPageCalls,
    },
    // Each iovec pins its page (get_user_pages per iovec); the second reference is put at once.
    {
      bioVecs: 1,
      pagesPinned: 2,
      pagesUnpinned: 2,
      nvmeCommands: 1,
      sgEntries: 0,
      dmaMapPageCalls: 1,
    },
  );
  assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 4096), vma.bytes.subarray(0, 4096));
  assert.equal(vma.pages[0].pincount, 0);
});

Deno.test("READV: pieces 1 KiB + 3 KiB + a page are two bio_vecs (the frames are scattered)", () => {
  const rig = makeRig(92, SMALL_LBA);
  const evs = submits(rig);
  const vma = rig.kernel.mm.mmap(2 * PAGE);
  const iov = [
    { base: vma.start, len: 1024 },
    { base: vma.start + 1024n, len: 3072 },
    { base: vma.start + 4096n, len: 4096 },
  ];
  const d = measure(rig, () => assert.equal(rw(rig, iovIterIovec("read", iov), 0n), 8192));
  assert.deepEqual(evs.map((e) => [e.path, e.rq!.nrPhysSegments]), [["prp", 2]]);
  assert.equal(d.bioVecs, 2);
  assert.equal(d.pagesPinned, 3);
  assert.equal(d.pagesUnpinned, 3);
  assert.equal(d.sgEntries, 2);
});

/** Two physically contiguous kernel frames as two one-page bio_vecs. */
function contigPair(rig: Rig): BioVec[] {
  const pfn = rig.kernel.phys.allocContig(2);
  return [0, 1].map((i) => ({ page: rig.kernel.phys.page(pfn + i)!, offset: 0, len: PAGE }));
}

Deno.test("blk_rq_map_sg: contiguous bio_vecs of one bio stay two entries; across bios they join", () => {
  const rig = makeRig(93, { sglThreshold: 0 });
  const lim = rig.host.namespaces[0].bdev.queue.limits;
  const bv = contigPair(rig);
  const one = bioInit(rig.kernel, "write", 0n);
  one.ioVec = bv;
  one.iter.size = 2 * PAGE;
  assert.deepEqual(blkRqMapSg(lim, [one]).map((s) => s.length), [PAGE, PAGE]);
  const a = bioInit(rig.kernel, "write", 0n);
  a.ioVec = [bv[0]];
  a.iter.size = PAGE;
  const b = bioInit(rig.kernel, "write", 8n);
  b.ioVec = [bv[1]];
  b.iter.size = PAGE;
  assert.deepEqual(blkRqMapSg(lim, [a, b]).map((s) => s.length), [2 * PAGE]);
  // Through the driver: one bio, two segments, two entries mapped.
  const evs = submits(rig);
  const d = measure(rig, () => assert.equal(rw(rig, iovIterBvec("write", bv, 2 * PAGE), 0n), 8192));
  assert.deepEqual(evs.map((e) => [e.path, e.rq!.nrPhysSegments]), [["prp", 2]]);
  assert.equal(d.sgEntries, 2);
});
