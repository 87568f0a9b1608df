import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { createDevicePort } from "../../sim/dma/bus.ts";
import { Iommu } from "../../sim/dma/iommu.ts";
import { IOMMU_READ, IOMMU_WRITE } from "../../sim/dma/io_pgtable.ts";
import { pfnToPhys } from "../../sim/memory/phys.ts";

Deno.test("device port: accesses past 2^53 and at the top of the 64-bit bus fault with the exact address, nothing moved", () => {
  const kernel = new Kernel({ seed: 4 });
  const port = createDevicePort(kernel.phys);
  const top = (1n << 64n) - 4096n;
  // Off the end of the bus: refused as a whole.
  assert.deepEqual(port.write(top + 4000n, new Uint8Array(200)), {
    addr: top + 4000n,
    reason: "bad-address",
  });
  // On the bus but no RAM there (no translator: bus = physical): the faulting byte is named.
  const high = (1n << 60n) + 0x123n;
  assert.deepEqual(port.readInto(high, new Uint8Array(8)), { addr: high, reason: "bad-address" });
  assert.deepEqual(port.readInto(top + 8n, new Uint8Array(8)), {
    addr: top + 8n,
    reason: "bad-address",
  });
});

Deno.test("device port: behind an IOMMU a bus address past 2^53 is unmapped, a mapped one crosses pages exactly", () => {
  const kernel = new Kernel({ seed: 4 });
  using iommu = new Iommu(kernel.stats, kernel.phys, { identity: false, iotlbEntries: 8 });
  const port = createDevicePort(kernel.phys, iommu);
  const pfn = kernel.phys.allocContig(2);
  const iova = 0x7fff_f000n; // two pages from here map to pfn, pfn + 1
  assert.equal(iommu.map(iova, pfnToPhys(pfn), 8192, IOMMU_READ | IOMMU_WRITE), 0);
  const data = Uint8Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(port.write(iova + 4046n, data), null); // 50 bytes in each page
  const back = new Uint8Array(100);
  assert.equal(port.readInto(iova + 4046n, back), null);
  assert.deepEqual(back, data);
  assert.deepEqual(kernel.phys.page(pfn + 1)!.data.subarray(0, 50), data.subarray(50));
  const far = (1n << 55n) + 0x10n;
  const before = new Uint8Array(back);
  assert.deepEqual(port.readInto(far, back), { addr: far, reason: "unmapped" });
  assert.deepEqual(back, before, "a faulted read leaves the buffer alone");
  // Crossing from a mapped page into an unmapped one: the second page faults, nothing written.
  assert.deepEqual(port.write(iova + 8190n, new Uint8Array(4)), {
    addr: iova + 8192n,
    reason: "unmapped",
  });
  assert.equal(kernel.phys.page(pfn + 1)!.data[4094], 0);
  assert.equal(iommu.unmap(iova, 8192), 8192);
  kernel.phys.freeContig(pfn, 2);
});
