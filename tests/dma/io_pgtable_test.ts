import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { IOMMU_READ, IOMMU_WRITE, IoPageTable } from "../../sim/dma/io_pgtable.ts";

/** Read entry `index` of the table page at `pfn` straight from physical memory. */
function entry(kernel: Kernel, pfn: number, index: number): bigint {
  const b = new Uint8Array(8);
  kernel.phys.read((BigInt(pfn) << 12n) + BigInt(index * 8), b);
  return new DataView(b.buffer).getBigUint64(0, true);
}

Deno.test("io_pgtable: the table is VT-d-layout bytes in kernel frames (4 levels, R bit 0, W bit 1, address 51:12)", () => {
  const kernel = new Kernel({ seed: 9 });
  using pt = new IoPageTable(kernel.stats, kernel.phys);
  // IOVA pfn with a distinct index at every level: 0x1_0203_0405 -> 4:0x081 3:0x040 2:0x181 1:0x005
  const iovaPfn = (0x081 * 2 ** 27) + (0x040 * 2 ** 18) + (0x181 * 2 ** 9) + 0x005;
  const targetPfn = 0xabcde12; // above 2^20, so the high word of the entry is used
  assert.equal(pt.setPte(iovaPfn, { pfn: targetPfn, prot: IOMMU_READ }), 0);
  assert.equal(pt.tablePages, 4);
  const l4 = entry(kernel, pt.rootPfn, 0x081);
  assert.equal(l4 & 3n, 3n); // non-leaf entries carry read and write
  const l3pfn = Number((l4 & 0x000f_ffff_ffff_f000n) >> 12n);
  const l3 = entry(kernel, l3pfn, 0x040);
  const l2 = entry(kernel, Number((l3 & 0x000f_ffff_ffff_f000n) >> 12n), 0x181);
  const l1 = entry(kernel, Number((l2 & 0x000f_ffff_ffff_f000n) >> 12n), 0x005);
  assert.equal(l1, (BigInt(targetPfn) << 12n) | 1n);
  assert.deepEqual(pt.walk(iovaPfn), { pfn: targetPfn, prot: IOMMU_READ });
  // Already mapped: refused, entry unchanged.
  assert.equal(pt.setPte(iovaPfn, { pfn: 1, prot: IOMMU_WRITE }), -1);
  assert.equal(pt.clearPte(iovaPfn), true);
  assert.equal(entry(kernel, Number((l2 & 0x000f_ffff_ffff_f000n) >> 12n), 0x005), 0n);
  assert.equal(pt.walk(iovaPfn), undefined);
  assert.equal(pt.clearPte(iovaPfn), false);
});

Deno.test("io_pgtable: a walk reads what is in memory, so a byte written behind the table's back is seen", () => {
  const kernel = new Kernel({ seed: 10 });
  using pt = new IoPageTable(kernel.stats, kernel.phys);
  assert.equal(pt.setPte(7, { pfn: 0x1234, prot: IOMMU_READ | IOMMU_WRITE }), 0);
  const before = kernel.phys.allocatedFrames;
  assert.equal(before >= 4, true);
  // Find the leaf page by walking the bytes, then drop its write bit in place.
  let pfn = pt.rootPfn;
  for (let i = 0; i < 3; i++) pfn = Number((entry(kernel, pfn, 0) >> 12n) & 0xff_ffff_ffffn);
  kernel.phys.write((BigInt(pfn) << 12n) + 7n * 8n, new Uint8Array([0x01]));
  assert.deepEqual(pt.walk(7), { pfn: 0x1234, prot: IOMMU_READ });
});

Deno.test("io_pgtable: dispose frees every table page", () => {
  const kernel = new Kernel({ seed: 11 });
  const before = kernel.phys.allocatedFrames;
  const pt = new IoPageTable(kernel.stats, kernel.phys);
  pt.setPte(0, { pfn: 5, prot: IOMMU_READ });
  pt.setPte(2 ** 35, { pfn: 6, prot: IOMMU_READ });
  assert.equal(kernel.phys.allocatedFrames - before, 7);
  pt.clearPte(0);
  pt.clearPte(2 ** 35);
  pt[Symbol.dispose]();
  assert.equal(kernel.phys.allocatedFrames, before);
});
