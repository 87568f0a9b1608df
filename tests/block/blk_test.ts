/**
 * Block layer behaviour through the block device file: splitting at
 * max_sectors, O_DIRECT alignment errors, the status -> errno table, plug
 * merging and batching, and waiting for tags.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, rw } from "./helpers.ts";
import { iovIterDmaTag, iovIterUbuf } from "../../sim/block/iov_iter.ts";
import { BlkStatus, blkStatusToErrno } from "../../sim/block/blk_types.ts";
import { blkFinishPlug, blkStartPlug } from "../../sim/block/blk-mq.ts";
import { nvmeErrorStatus } from "../../sim/nvme/core.ts";
import { NVME_SC, NVME_STATUS_DNR, type NvmeCommand } from "../../sim/device/nvme_spec.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { O } from "../../sim/uapi/io_uring.ts";
import { IOCB } from "../../sim/fs/file.ts";
import { Stats } from "../../sim/stats.ts";
import type { DmaTag } from "../../sim/block/bvec.ts";

function cmds(rig: ReturnType<typeof makeRig>): NvmeCommand[] {
  const out: NvmeCommand[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) out.push(e.cmd);
  };
  return out;
}

Deno.test("split at max_sectors: 256 KiB with MDTS 128 KiB is two commands", () => {
  const rig = makeRig(31, { namespaces: [{ lbaSize: 512, sizeBytes: 4n << 20n }] });
  const lim = rig.host.namespaces[0].bdev.queue.limits;
  assert.equal(lim.maxSectors, 256);
  assert.equal(lim.maxHwSectors, 256);
  assert.equal(lim.maxSegments, 33);
  assert.equal(lim.virtBoundaryMask, 4095);
  assert.equal(lim.dmaAlignment, 3);
  const c = cmds(rig);
  const buf = rig.kernel.mm.mmap(262144);
  const b = rig.kernel.stats.snapshot();
  assert.equal(rw(rig, iovIterUbuf("write", buf.start, 262144), 8192n), 262144);
  const d = Stats.diff(b, rig.kernel.stats.snapshot()).counters;
  assert.equal(d.bioSplits, 1);
  assert.equal(d.requests, 2);
  assert.equal(c.length, 2);
  assert.deepEqual(c.map((x) => [x.cdw10, x.cdw12 & 0xffff]), [[16, 255], [16 + 256, 255]]);
  // A dma-tag bio is split by max_sectors only.
  const bv = pinBvecs(rig, buf.start, 262144);
  const tag = rig.file.fOp.dmaMap!(rig.file, bv) as DmaTag;
  c.length = 0;
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 0, 262144), 0n), 262144);
  assert.deepEqual(c.map((x) => [x.cdw10, x.cdw12 & 0xffff]), [[0, 255], [256, 255]]);
});

Deno.test("split by the virt boundary: a gap between pieces ends the request there", () => {
  const rig = makeRig(32, { namespaces: [{ lbaSize: 512, sizeBytes: 4n << 20n }] });
  const c = cmds(rig);
  const buf = rig.kernel.mm.mmap(16384);
  // Two iovecs: the first ends mid-page (a gap to the second): two requests.
  const it = {
    type: "iovec" as const,
    dir: "write" as const,
    iov: [{ base: buf.start, len: 1024 }, { base: buf.start + 8192n, len: 4096 }],
    segIndex: 0,
    iovOffset: 0,
    count: 5120,
  };
  assert.equal(rw(rig, it, 0n), 5120);
  assert.deepEqual(c.map((x) => [x.cdw10, x.cdw12 & 0xffff]), [[0, 1], [2, 7]]);
});

Deno.test("O_DIRECT alignment: the kernel's errno for each misalignment", () => {
  const rig = makeRig(33, { namespaces: [{ lbaSize: 512, sizeBytes: 1n << 20n }] });
  const buf = rig.kernel.mm.mmap(8192);
  const w = (addr: bigint, len: number, pos: bigint) =>
    rw(rig, iovIterUbuf("write", addr, len), pos);
  assert.equal(w(buf.start, 4096, 100n), -Errno.EINVAL); // offset not a logical block multiple
  assert.equal(w(buf.start, 1000, 0n), -Errno.EINVAL); // length not a logical block multiple
  assert.equal(w(buf.start + 2n, 512, 0n), -Errno.EINVAL); // memory beyond dma_alignment (3)
  assert.equal(w(buf.start + 4n, 512, 0n), 512); // dword aligned memory is fine
  assert.equal(w(buf.start, 512, 1n << 20n), -Errno.ENOSPC); // write at the end
  assert.equal(rw(rig, iovIterUbuf("read", buf.start, 512), 1n << 20n), 0); // read at the end
  assert.equal(rw(rig, iovIterUbuf("read", buf.start, 1024), (1n << 20n) - 512n), 512); // truncated
  const big = makeRig(34, { namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 20n }] });
  const b2 = big.kernel.mm.mmap(8192);
  assert.equal(rw(big, iovIterUbuf("write", b2.start, 512), 0n), -Errno.EINVAL);
  assert.equal(rw(big, iovIterUbuf("write", b2.start, 4096), 512n), -Errno.EINVAL);
  // Unmapped user memory: pinning fails with -EFAULT.
  assert.equal(rw(big, iovIterUbuf("write", 0x1000n, 4096), 0n), -Errno.EFAULT);
  // Without O_DIRECT: buffered block device I/O is not modelled.
  const buffered = makeRig(35, {}, O.RDWR);
  const b3 = buffered.kernel.mm.mmap(4096);
  assert.equal(rw(buffered, iovIterUbuf("read", b3.start, 4096), 0n), -Errno.EINVAL);
});

Deno.test("blk_status_to_errno and nvme_error_status follow the kernel's tables", () => {
  const want: [number, number][] = [
    [BlkStatus.OK, 0],
    [BlkStatus.NOTSUPP, -Errno.EOPNOTSUPP],
    [BlkStatus.TIMEOUT, -Errno.ETIMEDOUT],
    [BlkStatus.NOSPC, -Errno.ENOSPC],
    [BlkStatus.TRANSPORT, -Errno.ENOLINK],
    [BlkStatus.TARGET, -Errno.EREMOTEIO],
    [BlkStatus.RESV_CONFLICT, -52],
    [BlkStatus.MEDIUM, -Errno.ENODATA],
    [BlkStatus.PROTECTION, -Errno.EILSEQ],
    [BlkStatus.RESOURCE, -Errno.ENOMEM],
    [BlkStatus.DEV_RESOURCE, -Errno.EBUSY],
    [BlkStatus.AGAIN, -Errno.EAGAIN],
    [BlkStatus.OFFLINE, -Errno.ENODEV],
    [BlkStatus.IOERR, -Errno.EIO],
    [BlkStatus.INVAL, -Errno.EINVAL],
    [200, -Errno.EIO],
  ];
  for (const [s, e] of want) assert.equal(blkStatusToErrno(s), e, `status ${s}`);
  assert.equal(nvmeErrorStatus(NVME_SC.LBA_RANGE | NVME_STATUS_DNR), BlkStatus.TARGET);
  assert.equal(nvmeErrorStatus(NVME_SC.INVALID_FIELD), BlkStatus.NOTSUPP);
  assert.equal(nvmeErrorStatus(NVME_SC.PRP_INVALID_OFFSET), BlkStatus.IOERR);
  assert.equal(nvmeErrorStatus(NVME_SC.DATA_XFER_ERROR), BlkStatus.IOERR);
  assert.equal(nvmeErrorStatus(NVME_SC.READ_ERROR), BlkStatus.MEDIUM);
  assert.equal(nvmeErrorStatus(NVME_SC.CAP_EXCEEDED), BlkStatus.NOSPC);
});

Deno.test("plug: adjacent bios merge into one request, the batch rings the doorbell once", () => {
  const rig = makeRig(36, { namespaces: [{ lbaSize: 512, sizeBytes: 4n << 20n }] });
  const c = cmds(rig);
  const buf = rig.kernel.mm.mmap(65536);
  let doorbells = 0;
  const ctrl = rig.host.controller!;
  const orig = ctrl.writeReg32.bind(ctrl);
  ctrl.writeReg32 = (off: number, v: number) => {
    if (off === 0x1008) doorbells++; // SQ 1 tail doorbell
    orig(off, v);
  };
  const results: number[] = [];
  const submit = (addr: bigint, len: number, pos: bigint) => {
    const r = rig.file.fOp.writeIter!(
      { file: rig.file, pos, flags: IOCB.DIRECT, complete: (x) => results.push(x) },
      iovIterUbuf("write", addr, len),
    );
    assert.equal(r, -Errno.EIOCBQUEUED);
  };
  const b = rig.kernel.stats.snapshot();
  const plug = blkStartPlug(rig.kernel);
  submit(buf.start, 8192, 0n); // sectors 0..15
  submit(buf.start + 8192n, 8192, 16n * 512n); // back merge
  submit(buf.start + 32768n, 4096, 1024n * 512n); // not adjacent: its own request
  assert.equal(doorbells, 0);
  blkFinishPlug(rig.kernel, plug);
  assert.equal(doorbells, 1);
  rig.kernel.runUntil(() => results.length === 3);
  assert.deepEqual(results, [8192, 8192, 4096]);
  const d = Stats.diff(b, rig.kernel.stats.snapshot()).counters;
  assert.equal(d.bioMerges, 1);
  assert.equal(d.requests, 2);
  assert.deepEqual(c.map((x) => [x.cdw10, x.cdw12 & 0xffff]), [[0, 31], [1024, 7]]);
  assert.deepEqual(
    rig.host.controller!.mediaRead(1, 0, 16384),
    buf.bytes.subarray(0, 16384),
  );
});

Deno.test("tags: with queue depth 2, further bios wait and are issued as requests complete", () => {
  const rig = makeRig(37, { queueDepth: 2, namespaces: [{ lbaSize: 512, sizeBytes: 4n << 20n }] });
  const buf = rig.kernel.mm.mmap(8 * 4096);
  rig.kernel.rng.fill(buf.bytes);
  const q = rig.host.namespaces[0].bdev.queue;
  const results: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = rig.file.fOp.writeIter!(
      {
        file: rig.file,
        pos: BigInt(i * 4096),
        flags: IOCB.DIRECT,
        complete: (x) => results.push(x),
      },
      iovIterUbuf("write", buf.start + BigInt(i * 4096), 4096),
    );
    assert.equal(r, -Errno.EIOCBQUEUED);
  }
  assert.equal(q.tagWaiters, 6);
  assert.equal(rig.kernel.inFlight, 2);
  rig.kernel.runUntil(() => results.length === 8);
  assert.deepEqual(results, Array(8).fill(4096));
  assert.equal(q.tagWaiters, 0);
  assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 8 * 4096), buf.bytes);
  // REQ_NOWAIT with no tag: -EAGAIN instead of waiting.
  const res2: number[] = [];
  for (let i = 0; i < 3; i++) {
    rig.file.fOp.writeIter!(
      {
        file: rig.file,
        pos: 0n,
        flags: IOCB.DIRECT | IOCB.NOWAIT,
        complete: (x) => res2.push(x),
      },
      iovIterUbuf("write", buf.start, 4096),
    );
  }
  rig.kernel.runUntil(() => res2.length === 3);
  assert.deepEqual(res2, [-Errno.EAGAIN, 4096, 4096]);
});

Deno.test("LBA beyond the namespace never reaches the device; fsync without a write cache is 0", () => {
  const rig = makeRig(38, { namespaces: [{ lbaSize: 512, sizeBytes: 1n << 20n }] });
  let done = -1;
  assert.equal(rig.file.fOp.fsync!(rig.file, false, (r) => (done = r)), 0);
  assert.equal(done, -1);
});

Deno.test("plug: a dma-tag bio never merges, with a bvec bio or another dma-tag bio", () => {
  const rig = makeRig(39, { namespaces: [{ lbaSize: 512, sizeBytes: 4n << 20n }] });
  const c = cmds(rig);
  const buf = rig.kernel.mm.mmap(65536);
  const tag = rig.file.fOp.dmaMap!(rig.file, pinBvecs(rig, buf.start, 65536)) as DmaTag;
  const results: number[] = [];
  const submit = (it: Parameters<typeof rw>[1], pos: bigint) => {
    const r = rig.file.fOp.writeIter!(
      { file: rig.file, pos, flags: IOCB.DIRECT, complete: (x) => results.push(x) },
      it,
    );
    assert.equal(r, -Errno.EIOCBQUEUED);
  };
  const b = rig.kernel.stats.snapshot();
  const plug = blkStartPlug(rig.kernel);
  submit(iovIterUbuf("write", buf.start, 8192), 0n); // sectors 0..15
  submit(iovIterDmaTag("write", tag, 8192, 8192), 8192n); // 16..31: adjacent, not merged
  submit(iovIterDmaTag("write", tag, 16384, 8192), 16384n); // 32..47: adjacent, not merged
  submit(iovIterUbuf("write", buf.start + 24576n, 8192), 24576n); // 48..63: not merged
  blkFinishPlug(rig.kernel, plug);
  rig.kernel.runUntil(() => results.length === 4);
  assert.deepEqual(results, [8192, 8192, 8192, 8192]);
  const d = Stats.diff(b, rig.kernel.stats.snapshot()).counters;
  assert.equal(d.bioMerges, 0);
  assert.equal(d.requests, 4);
  assert.deepEqual(c.map((x) => [x.cdw10, x.cdw12 & 0xffff]), [[0, 15], [16, 15], [32, 15], [
    48,
    15,
  ]]);
  assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 32768), buf.bytes.subarray(0, 32768));
});
