/**
 * nvme_map_data(): exact PRPs for the scatterlist path and SGL descriptors
 * above sgl_threshold, checked against the scatterlist's DMA addresses.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, rw } from "../block/helpers.ts";
import { iovIterBvec } from "../../sim/block/iov_iter.ts";
import {
  decodeSglDescriptor,
  NVME_SGL_TYPE,
  nvmeCmdPsdt,
  type NvmeCommand,
} from "../../sim/device/nvme_spec.ts";
import type { NvmeDmaMapping } from "../../sim/nvme/pci.ts";
import type { DmaPoolBlock } from "../../sim/dma/types.ts";

function trace(rig: ReturnType<typeof makeRig>) {
  const out: { cmd: NvmeCommand; list: DmaPoolBlock[]; path: string }[] = [];
  rig.host.driver.onSubmit = (e) => {
    if (e.qid > 0) {
      out.push({
        cmd: e.cmd,
        list: e.listBlocks.map((b) => ({ dma: b.dma, cpu: b.cpu.slice() })),
        path: e.path,
      });
    }
  };
  return out;
}

Deno.test("PRP list from the scatterlist: PRP1 the first page, PRP2 a list of the rest (no IOMMU)", () => {
  const rig = makeRig(41, { iommu: "off", sglThreshold: 0 });
  const t = trace(rig);
  const vma = rig.kernel.mm.mmap(8 * 4096);
  const bv = pinBvecs(rig, vma.start, 8 * 4096);
  assert.equal(rw(rig, iovIterBvec("write", bv, 4 * 4096, 4096), 0n), 16384);
  assert.equal(t[0].path, "prp");
  // Without an IOMMU the bus address is the physical address of each page.
  const phys = (i: number) => BigInt(bv[i].page.pfn) << 12n;
  assert.equal(t[0].cmd.prp1, phys(1));
  assert.equal(t[0].list.length, 1);
  assert.equal(t[0].cmd.prp2, t[0].list[0].dma);
  const dv = new DataView(t[0].list[0].cpu.buffer);
  assert.deepEqual([0, 1, 2].map((i) => dv.getBigUint64(i * 8, true)), [phys(2), phys(3), phys(4)]);
});

Deno.test("SGL above sgl_threshold: a last-segment descriptor to one data block per entry", () => {
  const rig = makeRig(42, { iommu: "off", sglThreshold: 4096 });
  const t = trace(rig);
  const vma = rig.kernel.mm.mmap(8 * 4096);
  rig.kernel.rng.fill(vma.bytes);
  const bv = pinBvecs(rig, vma.start, 8 * 4096);
  assert.equal(rw(rig, iovIterBvec("write", bv, 4 * 4096), 0n), 16384);
  assert.equal(t[0].path, "sgl");
  assert.equal(nvmeCmdPsdt(t[0].cmd), 1);
  const bytes = new Uint8Array(16);
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(0, t[0].cmd.prp1, true);
  dv.setBigUint64(8, t[0].cmd.prp2, true);
  const seg = decodeSglDescriptor(bytes);
  assert.equal(seg.type, NVME_SGL_TYPE.LAST_SEGMENT);
  assert.equal(seg.length, 4 * 16);
  assert.equal(seg.addr, t[0].list[0].dma);
  for (let i = 0; i < 4; i++) {
    const d = decodeSglDescriptor(t[0].list[0].cpu, i * 16);
    assert.equal(d.type, NVME_SGL_TYPE.DATA_BLOCK);
    assert.equal(d.addr, BigInt(bv[i].page.pfn) << 12n);
    assert.equal(d.length, 4096);
  }
  assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 16384), vma.bytes.subarray(0, 16384));
  // The premapped path never uses SGLs.
  const tag = rig.file.fOp.dmaMap!(rig.file, bv) as NvmeDmaMapping;
  assert.equal(
    rw(rig, { type: "dmatag", dir: "read", tag, iovOffset: 0, count: 16384 }, 0n),
    16384,
  );
  assert.equal(t[1].path, "premapped");
  assert.equal(nvmeCmdPsdt(t[1].cmd), 0);
});

Deno.test("SGL choice averages over physical segments, not IOMMU-merged DMA segments", () => {
  // 64 KiB over 16 scattered pages: 16 physical segments of 4 KiB, below the default 32 KiB
  // sgl_threshold, so PRPs, even though a strict IOMMU merges them into one DMA segment.
  const rig = makeRig(43, { iommu: "strict" });
  const t = trace(rig);
  const vma = rig.kernel.mm.mmap(16 * 4096);
  rig.kernel.rng.fill(vma.bytes);
  const bv = pinBvecs(rig, vma.start, 16 * 4096);
  assert.equal(rw(rig, iovIterBvec("write", bv, 16 * 4096), 0n), 65536);
  assert.equal(t[0].path, "prp");
  assert.equal(nvmeCmdPsdt(t[0].cmd), 0);
  assert.equal(t[0].list.length, 1); // 15 entries fit one small-pool block
  assert.deepEqual(rig.host.controller!.mediaRead(1, 0, 65536), vma.bytes.subarray(0, 65536));
});
