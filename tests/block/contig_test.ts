/**
 * Physically contiguous user memory, as a transparent huge page gives it,
 * and what 6.0 does with it: __bio_try_merge_page() makes one multi-page
 * bio_vec of the contiguous pages, so the request is one physical segment;
 * nvme_map_data() sends one that PRP1/PRP2 cannot carry as a single SGL data
 * block (nvme_setup_sgl_simple) when the controller has SGLs, the queue is
 * an I/O queue and sgl_threshold is set, and through the iod_mempool
 * scatterlist (one entry) and a PRP list otherwise.
 */
import assert from "node:assert/strict";
import { makeRig, type Rig, rw } from "./helpers.ts";
import { iovIterUbuf } from "../../sim/block/iov_iter.ts";
import type { AttachNvmeOptions } from "../../sim/host.ts";
import { decodeSglDescriptor, NVME_SGL_TYPE, nvmeCmdPsdt } from "../../sim/device/nvme_spec.ts";
import type { NvmeSubmitEvent } from "../../sim/nvme/pci.ts";
import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, pfnToPhys } from "../../sim/memory/phys.ts";
import type { Vma } from "../../sim/memory/mm.ts";
import { Stats } from "../../sim/stats.ts";
import { bioSetBioBytes, BLKDEV_DIO_POOL } from "../../sim/block/bio.ts";

const KIB = 1024;

function submits(rig: Rig): NvmeSubmitEvent[] {
  const out: NvmeSubmitEvent[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) out.push(e);
  };
  return out;
}

function thp(rig: Rig, len = HPAGE_PMD_SIZE): Vma {
  const vma = rig.kernel.mm.mmap(len, { hugePage: true });
  rig.kernel.rng.fill(vma.bytes);
  return vma;
}

function sglOf(ev: NvmeSubmitEvent) {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, ev.cmd.prp1, true);
  dv.setBigUint64(8, ev.cmd.prp2, true);
  return decodeSglDescriptor(b);
}

Deno.test("mmap hugePage: 2 MiB aligned, each whole 2 MiB one aligned run of frames, the rest scattered", () => {
  const rig = makeRig(111);
  const a = rig.kernel.mm.mmap(HPAGE_PMD_SIZE + 8 * KIB, { hugePage: true });
  assert.equal(a.start % BigInt(HPAGE_PMD_SIZE), 0n);
  const base = a.pages[0].pfn;
  assert.equal(base % HPAGE_PMD_NR, 0);
  assert.ok(a.pages.slice(0, HPAGE_PMD_NR).every((p, i) => p.pfn === base + i));
  // The two pages past the huge page are ordinary scattered frames.
  assert.notEqual(a.pages[HPAGE_PMD_NR].pfn, base + HPAGE_PMD_NR);
  assert.notEqual(a.pages[HPAGE_PMD_NR + 1].pfn, a.pages[HPAGE_PMD_NR].pfn + 1);
  // Without it (the default) neighbouring pages are not contiguous.
  const b = rig.kernel.mm.mmap(16 * KIB);
  assert.ok(b.pages.slice(1).every((p, i) => p.pfn !== b.pages[i].pfn + 1));
  // Under 2 MiB there is no whole huge page to map: scattered as well.
  const c = rig.kernel.mm.mmap(64 * KIB, { hugePage: true });
  assert.ok(c.pages.slice(1).every((p, i) => p.pfn !== c.pages[i].pfn + 1));
});

function measure(rig: Rig, f: () => void) {
  const before = rig.kernel.stats.snapshot();
  f();
  return Stats.diff(before, rig.kernel.stats.snapshot()).counters;
}

Deno.test("64 KiB from a huge page: one bio_vec, one segment, nvme_setup_sgl_simple", () => {
  for (const dir of ["write", "read"] as const) {
    const rig = makeRig(112, { iommu: "off" });
    const evs = submits(rig);
    const vma = thp(rig);
    const off = 3 * 4096;
    const buf = vma.start + BigInt(off);
    const want = vma.bytes.slice(off, off + 65536);
    if (dir === "read") {
      // Put the bytes on the media through an ordinary buffer, then read into the huge page.
      const plain = rig.kernel.mm.mmap(65536);
      plain.bytes.set(want);
      assert.equal(rw(rig, iovIterUbuf("write", plain.start, 65536), 0n), 65536);
      evs.length = 0;
      vma.bytes.fill(0, off, off + 65536);
    }
    const d = measure(rig, () => assert.equal(rw(rig, iovIterUbuf(dir, buf, 65536), 0n), 65536));
    assert.deepEqual(evs.map((e) => [e.path, e.rq!.nrPhysSegments]), [["sgl-simple", 1]]);
    assert.equal(nvmeCmdPsdt(evs[0].cmd), 1);
    const sg = sglOf(evs[0]);
    assert.deepEqual(
      [sg.type, sg.addr, sg.length],
      [NVME_SGL_TYPE.DATA_BLOCK, pfnToPhys(vma.pages[3].pfn), 65536],
    );
    assert.deepEqual(
      {
        bioVecs: d.bioVecs,
        pagesPinned: d.pagesPinned,
        pagesUnpinned: d.pagesUnpinned,
        dmaMapPageCalls: d.dmaMapPageCalls,
        dmaUnmapPageCalls: d.dmaUnmapPageCalls,
        sgEntries: d.sgEntries,
        sglDescriptors: d.sglDescriptors,
        prpPoolAllocs: d.prpPoolAllocs,
        iodMempoolAllocs: d.iodMempoolAllocs,
        bvecAllocs: d.bvecAllocs,
        bytesAllocated: d.bytesAllocated,
      },
      {
        bioVecs: 1,
        pagesPinned: 16,
        pagesUnpinned: 16,
        dmaMapPageCalls: 1,
        dmaUnmapPageCalls: 1,
        sgEntries: 0,
        sglDescriptors: 1,
        prpPoolAllocs: 0,
        iodMempoolAllocs: 0,
        // The bio_vecs are sized from the 16 pages before any merging: biovec-16.
        bvecAllocs: 1,
        bytesAllocated: bioSetBioBytes(BLKDEV_DIO_POOL) + 16 * 16,
      },
      dir,
    );
    if (dir === "write") assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 65536), want);
    else assert.deepEqual(vma.bytes.subarray(off, off + 65536), want);
  }
});

Deno.test("one contiguous segment without the SGL fast path: the iod_mempool scatterlist, one entry", () => {
  const cases: [string, Partial<AttachNvmeOptions>][] = [
    ["sgl_threshold 0", { sglThreshold: 0 }],
    ["controller without SGLs", { sgls: false }],
  ];
  for (const [what, opts] of cases) {
    const rig = makeRig(113, { iommu: "off", ...opts });
    const evs = submits(rig);
    const vma = thp(rig);
    const d = measure(
      rig,
      () => assert.equal(rw(rig, iovIterUbuf("write", vma.start, 65536), 0n), 65536),
    );
    assert.deepEqual(evs.map((e) => [e.path, e.rq!.nrPhysSegments]), [["prp", 1]], what);
    assert.deepEqual([d.sgEntries, d.iodMempoolAllocs, d.prpEntries], [1, 1, 15], what);
    assert.equal(evs[0].cmd.prp1, pfnToPhys(vma.pages[0].pfn), what);
    assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 65536), vma.bytes.subarray(0, 65536));
  }
});

Deno.test("6.0's unmasked bv_offset: the 4 KiB left of a split multi-page bvec misses the PRP fast path", () => {
  // MDTS 5: 132 KiB is split at 128 KiB; the rest resumes 128 KiB into the same bio_vec.
  const rig = makeRig(114, { iommu: "off" });
  const evs = submits(rig);
  const vma = thp(rig);
  assert.equal(rw(rig, iovIterUbuf("write", vma.start, 132 * KIB), 0n), 132 * KIB);
  assert.deepEqual(
    evs.map((e) => [e.path, e.rq!.dataLen]),
    [["sgl-simple", 128 * KIB], ["sgl-simple", 4 * KIB]],
  );
  assert.deepEqual(
    rig.host.controller!.mediaRead(1, 0, 132 * KIB),
    vma.bytes.subarray(0, 132 * KIB),
  );
});

Deno.test("sgl_simple under IOMMU strict: one mapping of the whole segment, one IOVA, 16 PTEs", () => {
  const rig = makeRig(115, { iommu: "strict" });
  const evs = submits(rig);
  const vma = thp(rig);
  const d = measure(
    rig,
    () => assert.equal(rw(rig, iovIterUbuf("write", vma.start, 65536), 0n), 65536),
  );
  assert.equal(evs[0].path, "sgl-simple");
  assert.deepEqual(
    [d.iovaAllocs, d.iommuPteWrites, d.iommuPteClears, d.iotlbInvalidations, d.iommuFaults],
    [1, 16, 16, 1, 0],
  );
  assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 65536), vma.bytes.subarray(0, 65536));
});
