/**
 * What 6.0 allocates per I/O, counted where it allocates it: the bio from
 * its bio_set (blkdev_dio_pool for an O_DIRECT I/O's first bio, fs_bio_set
 * for the next ones, q->bio_split for each split), a biovec slab array when a
 * bio needs more than BIO_INLINE_VECS bio_vecs, and the iod_mempool element
 * (the scatterlist table) when nvme_map_data() misses the single-segment
 * fast paths. Exact bytes per path, with the IOMMU off and the PRP pool warm.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, type Rig, rw } from "../block/helpers.ts";
import { iovIterBvec, iovIterDmaTag, iovIterUbuf } from "../../sim/block/iov_iter.ts";
import {
  BIO_BYTES,
  BIO_SPLIT_SET,
  bioSetBioBytes,
  BLKDEV_DIO_POOL,
  FS_BIO_SET,
} from "../../sim/block/bio.ts";
import { NVME_IOD_ALLOC_BYTES, NvmeDmaMapping } from "../../sim/nvme/pci.ts";
import { Stats } from "../../sim/stats.ts";
import { blkdevFsync } from "../../sim/block/fops.ts";

const KIB = 1024;
const DIO = 264;
const FS = 200;
const SPLIT = 136;
const IOD = 4072;
const SMALL = 256; // a "prp list 256" block

Deno.test("alloc sizes: struct bio 136, bio_sets 264/200/136, iod_mempool element 4072", () => {
  assert.equal(BIO_BYTES, 136);
  assert.equal(bioSetBioBytes(BLKDEV_DIO_POOL), DIO); // 64 front pad + bio + 4 inline bio_vecs
  assert.equal(bioSetBioBytes(FS_BIO_SET), FS); // bio + 4 inline bio_vecs
  assert.equal(bioSetBioBytes(BIO_SPLIT_SET), SPLIT); // bio alone
  // 8 x max(npages_prp 1, npages_sgl 1) + 127 scatterlist entries of 32 bytes.
  assert.equal(NVME_IOD_ALLOC_BYTES, IOD);
});

type Counts = {
  bioAllocs: number;
  bvecAllocs: number;
  iodMempoolAllocs: number;
  bytesAllocated: number;
};

function measure(rig: Rig, f: () => number, want: number): Counts {
  const before = rig.kernel.stats.snapshot();
  assert.equal(f(), want);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  return {
    bioAllocs: d.bioAllocs,
    bvecAllocs: d.bvecAllocs,
    iodMempoolAllocs: d.iodMempoolAllocs,
    bytesAllocated: d.bytesAllocated,
  };
}

const c = (bio: number, bvec: number, iod: number, bytes: number): Counts => ({
  bioAllocs: bio,
  bvecAllocs: bvec,
  iodMempoolAllocs: iod,
  bytesAllocated: bytes,
});

function rig4k(
  seed: number,
): { rig: Rig; start: bigint; tag: NvmeDmaMapping; bv: ReturnType<typeof pinBvecs> } {
  const rig = makeRig(seed, { iommu: "off", mdts: 10, maxSectorsKb: 128 });
  const vma = rig.kernel.mm.mmap(4 << 20);
  const bv = pinBvecs(rig, vma.start, 4 << 20);
  const tag = rig.file.fOp.dmaMap!(rig.file, bv);
  assert.ok(tag instanceof NvmeDmaMapping);
  // Warm the PRP pools (a pool page is a coherent allocation of its own).
  rw(rig, iovIterUbuf("read", vma.start, 128 * KIB), 0n);
  rw(rig, iovIterUbuf("read", vma.start, 16 * KIB), 0n);
  return { rig, start: vma.start, tag, bv };
}

Deno.test("per I/O: none, bvec and dma at 4, 16 and 64 KiB", () => {
  const { rig, start, tag, bv } = rig4k(101);
  const none = (n: number) => measure(rig, () => rw(rig, iovIterUbuf("write", start, n), 0n), n);
  const bvec = (n: number) => measure(rig, () => rw(rig, iovIterBvec("write", bv, n), 0n), n);
  const dma = (n: number) => measure(rig, () => rw(rig, iovIterDmaTag("write", tag, 0, n), 0n), n);
  // 4 KiB: one segment, nvme_setup_prp_simple: only the bio.
  assert.deepEqual(none(4 * KIB), c(1, 0, 0, DIO));
  assert.deepEqual(bvec(4 * KIB), c(1, 0, 0, DIO));
  assert.deepEqual(dma(4 * KIB), c(1, 0, 0, DIO));
  // 16 KiB: 4 pages fit the inline bio_vecs; the scatterlist path takes the iod element.
  assert.deepEqual(none(16 * KIB), c(1, 0, 1, DIO + IOD + SMALL));
  assert.deepEqual(bvec(16 * KIB), c(1, 0, 1, DIO + IOD + SMALL));
  assert.deepEqual(dma(16 * KIB), c(1, 0, 0, DIO));
  // 64 KiB: 16 pages take a biovec-16 array (256 bytes) on the user-page path.
  assert.deepEqual(none(64 * KIB), c(1, 1, 1, DIO + 16 * 16 + IOD + SMALL));
  assert.deepEqual(bvec(64 * KIB), c(1, 0, 1, DIO + IOD + SMALL));
  assert.deepEqual(dma(64 * KIB), c(1, 0, 0, DIO));
});

Deno.test("per I/O: splits take a bio from q->bio_split; past 256 pages a second bio from fs_bio_set", () => {
  const { rig, start, tag, bv } = rig4k(102);
  const cmd = IOD + SMALL; // 128 KiB page aligned: 31 list entries, one small-pool block
  // 256 KiB: 64 pages (biovec-64, 1 KiB), split once at max_sectors 128 KiB.
  assert.deepEqual(
    measure(rig, () => rw(rig, iovIterUbuf("read", start, 256 * KIB), 0n), 256 * KIB),
    c(2, 1, 2, DIO + 64 * 16 + SPLIT + 2 * cmd),
  );
  assert.deepEqual(
    measure(rig, () => rw(rig, iovIterBvec("read", bv, 256 * KIB), 0n), 256 * KIB),
    c(2, 0, 2, DIO + SPLIT + 2 * cmd),
  );
  assert.deepEqual(
    measure(rig, () => rw(rig, iovIterDmaTag("read", tag, 0, 256 * KIB), 0n), 256 * KIB),
    c(2, 0, 0, DIO + SPLIT),
  );
  // 2 MiB of user pages: 512 pages, more than BIO_MAX_VECS: two bios of 256 bio_vecs
  // (biovec-max, 4 KiB each), the second from fs_bio_set; 16 commands, 14 splits.
  assert.deepEqual(
    measure(rig, () => rw(rig, iovIterUbuf("write", start, 2 << 20), 0n), 2 << 20),
    c(16, 2, 16, DIO + FS + 2 * 4096 + 14 * SPLIT + 16 * cmd),
  );
});

Deno.test("fsync: blkdev_issue_flush's bio is on the stack, nothing allocated", () => {
  const rig = makeRig(103, { iommu: "off", volatileWriteCache: true });
  const before = rig.kernel.stats.snapshot();
  let res: number | undefined;
  const r = blkdevFsync(rig.kernel, rig.host.namespaces[0].bdev, (x) => (res = x));
  if (r !== 0) rig.kernel.runUntil(() => res !== undefined);
  const d = Stats.diff(before, rig.kernel.stats.snapshot()).counters;
  assert.equal(d.nvmeCommands, 1);
  assert.deepEqual([d.bios, d.bioAllocs, d.bytesAllocated], [1, 0, 0]);
});
