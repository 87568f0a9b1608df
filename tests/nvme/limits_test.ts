/**
 * Transfer limits as 6.0 sets them (max_hw_sectors from NVME_MAX_KB_SZ and
 * MDTS, max_segments from NVME_MAX_SEGS) and max_sectors_kb written as
 * through sysfs (queue_max_sectors_store), from the driver and from
 * `openTestbed`.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, rw } from "../block/helpers.ts";
import { iovIterDmaTag } from "../../sim/block/iov_iter.ts";
import {
  queueMaxHwSectorsShow,
  queueMaxSectorsShow,
  queueMaxSectorsStore,
} from "../../sim/block/blk-sysfs.ts";
import { NVME_MAX_KB_SZ, NVME_MAX_SEGS, NvmeDmaMapping } from "../../sim/nvme/pci.ts";
import { Errno, ErrnoError } from "../../sim/uapi/errno.ts";
import { openTestbed } from "../../mod.ts";
import { SimTestbed } from "../../sim/testbed.ts";

Deno.test("limits: 6.0's NVME_MAX_KB_SZ 4096 caps max_hw_sectors above MDTS 10; 127 segments", () => {
  assert.equal(NVME_MAX_KB_SZ, 4096);
  assert.equal(NVME_MAX_SEGS, 127);
  for (
    const [mdts, hwKb, segs] of [[5, 128, 33], [9, 2048, 127], [10, 4096, 127], [12, 4096, 127]]
  ) {
    const rig = makeRig(71, { mdts });
    const q = rig.host.namespaces[0].bdev.queue;
    assert.equal(queueMaxHwSectorsShow(q), hwKb, `mdts ${mdts}`);
    assert.equal(q.limits.maxSegments, segs, `mdts ${mdts}`);
    // blk_queue_max_hw_sectors(): max_sectors defaults to min(max_hw, BLK_DEF_MAX_SECTORS).
    assert.equal(queueMaxSectorsShow(q), Math.min(hwKb, 1280), `mdts ${mdts}`);
  }
});

Deno.test("max_sectors_kb store: [page size in KiB, max_hw_sectors_kb], else -EINVAL", () => {
  const rig = makeRig(72, { mdts: 10 });
  const q = rig.host.namespaces[0].bdev.queue;
  for (const bad of [0, 3, 4097, 8192, 1.5, -4, NaN]) {
    assert.equal(queueMaxSectorsStore(q, bad), -Errno.EINVAL, `${bad}`);
    assert.equal(queueMaxSectorsShow(q), 1280, `${bad} left it unchanged`);
  }
  assert.equal(queueMaxSectorsStore(q, 4), 0);
  assert.equal(q.limits.maxSectors, 8);
  assert.equal(queueMaxSectorsStore(q, 4096), 0);
  assert.equal(q.limits.maxSectors, 8192);
});

Deno.test("max_sectors_kb splits the next bios: 4 MiB premapped is 4 commands, then 9, then 16", () => {
  const rig = makeRig(73, { iommu: "strict", mdts: 10, bugs: { v2UninitRemaining: false } });
  const vma = rig.kernel.mm.mmap(4 << 20);
  const tag = rig.file.fOp.dmaMap!(rig.file, pinBvecs(rig, vma.start, 4 << 20));
  assert.ok(tag instanceof NvmeDmaMapping);
  const lens: number[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) lens.push(e.rq!.dataLen);
  };
  const q = rig.host.namespaces[0].bdev.queue;
  const io = () => rw(rig, iovIterDmaTag("read", tag, 0, 4 << 20), 0n);
  assert.equal(io(), 4 << 20);
  assert.deepEqual(lens.splice(0), [1280, 1280, 1280, 256].map((k) => k << 10));
  // Not over max_sectors any more: PATCHv2's bio_split_rw() counts its 1024 pages as
  // segments and cuts after max_segments (127) pages.
  assert.equal(queueMaxSectorsStore(q, 4096), 0);
  assert.equal(io(), 4 << 20);
  assert.deepEqual(lens.splice(0), [...Array(8).fill(127 * 4096), 32 << 10]);
  assert.equal(queueMaxSectorsStore(q, 256), 0);
  assert.equal(io(), 4 << 20);
  assert.deepEqual(lens.splice(0), Array(16).fill(256 << 10));
});

Deno.test("openTestbed nvmeLimits: MDTS and max_sectors_kb reach the queue; out of range is EINVAL", () => {
  {
    using tb = openTestbed({ nvmeLimits: { mdts: 10, maxSectorsKb: 4096 } });
    assert.ok(tb instanceof SimTestbed);
    const lim = tb.host.namespaces[0].bdev.queue.limits;
    assert.equal(lim.maxHwSectors, 8192);
    assert.equal(lim.maxSectors, 8192);
  }
  {
    using tb = openTestbed({ nvmeLimits: { mdts: 10 } });
    assert.equal((tb as SimTestbed).host.namespaces[0].bdev.queue.limits.maxSectors, 2560);
  }
  // max_hw_sectors_kb is 128 with the default MDTS 5.
  assert.throws(
    () => openTestbed({ nvmeLimits: { maxSectorsKb: 256 } }),
    (e) => e instanceof ErrnoError && e.errno === Errno.EINVAL,
  );
  assert.throws(
    () => openTestbed({ nvmeLimits: { mdts: 10, maxSectorsKb: 2 } }),
    (e) => e instanceof ErrnoError && e.errno === Errno.EINVAL,
  );
});
