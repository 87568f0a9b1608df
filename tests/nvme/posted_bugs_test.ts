/**
 * The posted series' flaws, each reproduced in the variant that posted it and
 * caught by a checking layer (the DMA-API debug checker, swiotlb's warnings,
 * KASAN-style reports, or the bytes read back), and absent from `hardened`.
 */
import assert from "node:assert/strict";
import { makeRig, pinBvecs, type Rig, rw } from "../block/helpers.ts";
import { iovIterDmaTag, iovIterUbuf } from "../../sim/block/iov_iter.ts";
import { NvmeDmaMapping } from "../../sim/nvme/pci.ts";
import type { AttachNvmeOptions } from "../../sim/host.ts";
import type { PremapVariant } from "../../sim/kernel.ts";

const P = 4096;

function rigFor(seed: number, premap: PremapVariant, opts: Partial<AttachNvmeOptions> = {}) {
  const rig = makeRig(seed, { iommu: "strict", ...opts });
  rig.kernel.premap = premap;
  return rig;
}

function premap(rig: Rig, bytes: number, startOff: number) {
  const vma = rig.kernel.mm.mmap(bytes + 2 * P);
  const bvecs = pinBvecs(rig, vma.start + BigInt(startOff), bytes);
  const tag = rig.file.fOp.dmaMap!(rig.file, bvecs);
  assert.ok(tag instanceof NvmeDmaMapping, `dma_map returned ${tag}`);
  return { vma, user: vma.bytes.subarray(startOff, startOff + bytes), tag };
}

/** Read `len` bytes of the namespace at `pos` through the normal (unmapped) path. */
function mediaRead(rig: Rig, pos: number, len: number): Uint8Array {
  const vma = rig.kernel.mm.mmap(len);
  assert.equal(rw(rig, iovIterUbuf("read", vma.start, len), BigInt(pos)), len);
  return vma.bytes.slice(0, len);
}

function debugCounts(rig: Rig): Record<string, number> {
  const c = rig.host.dmaSetup.debug!.counts;
  return Object.fromEntries(Object.entries(c).filter(([, v]) => v > 0));
}

for (const variant of ["v2", "v3"] as const) {
  Deno.test(`${variant}: nvme_pci_dma_unmap's PAGE_SIZE - offset_in_page() lengths are caught`, () => {
    const rig = rigFor(81, variant);
    // 16 KiB at offset 512: entries for 5 pages; the first mapping is 3584 bytes at
    // bus+512, the last 512 bytes.
    const { tag } = premap(rig, 4 * P, 512);
    assert.deepEqual(tag.maps.map((m) => m.len), [3584, 4096, 4096, 4096, 512]);
    rig.file.fOp.dmaUnmap!(rig.file, tag);
    // The first unmap names the page base (not the handle): not allocated, so the real
    // mapping stays live; the last unmaps 4096 bytes of a 512-byte mapping.
    assert.deepEqual(debugCounts(rig), { "free-not-allocated": 1, "free-size": 1 });
    const msgs = rig.host.dmaSetup.debug!.events.map((e) => e.message);
    assert.match(msgs[0], /device driver tries to free DMA memory it has not allocated/);
    assert.match(
      msgs[1],
      /frees DMA memory with different size .*\[map size=512 bytes\] \[unmap size=4096 bytes\]/,
    );
    rig.host[Symbol.dispose]();
    // At teardown the first page's mapping is still there: a leak.
    assert.equal(rig.host.dmaSetup.debug!.counts.leak, 1);
  });
}

Deno.test("hardened: the same unmap is exact and the checker is silent", () => {
  const rig = rigFor(81, "hardened");
  const { tag } = premap(rig, 4 * P, 512);
  rig.file.fOp.dmaUnmap!(rig.file, tag);
  rig.host[Symbol.dispose]();
  assert.deepEqual(debugCounts(rig), {});
});

Deno.test("v2 under swiotlb: a write's syncs cover entries 0.. not the I/O's pages: stale data on the media", () => {
  const rig = rigFor(82, "v2", { iommu: "bounce" });
  const { user, tag } = premap(rig, 16 * P, 0);
  // The buffer's contents change after MAP_BUFFERS (the bounce slots hold the old ones).
  rig.kernel.rng.fill(user);
  const want = user.slice(5 * P, 8 * P);
  // Pages 5..7: PRP1 = entry 5 synced right (offset 0), the list's 6..7 not: the loop
  // syncs entries 0 and 1 instead.
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 5 * P, 3 * P), 0n), 3 * P);
  const got = mediaRead(rig, 0, 3 * P);
  assert.deepEqual(got.subarray(0, P), want.subarray(0, P));
  assert.notDeepEqual(got.subarray(P, 2 * P), want.subarray(P, 2 * P));
  assert.deepEqual(
    got.subarray(P),
    new Uint8Array(2 * P),
    "pages 6..7 went out as they were at MAP",
  );
  // Whole pages inside the mapping: the checker has nothing to say; only the data shows it.
  assert.deepEqual(debugCounts(rig), {});
});

Deno.test("v2 under swiotlb: a read's completion sync misses its last page", () => {
  const rig = rigFor(83, "v2", { iommu: "bounce" });
  const { user, tag } = premap(rig, 16 * P, 0);
  const media = new Uint8Array(3 * P);
  rig.kernel.rng.fill(media);
  const src = rig.kernel.mm.mmap(3 * P);
  src.bytes.set(media);
  assert.equal(rw(rig, iovIterUbuf("write", src.start, 3 * P), 0n), 3 * P);
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 2 * P, 3 * P), 0n), 3 * P);
  // nvme_sync_dma: the first page, then DIV_ROUND_UP(2 pages) - 1 = 1 more: pages 2, 3.
  assert.deepEqual(user.subarray(2 * P, 4 * P), media.subarray(0, 2 * P));
  assert.deepEqual(user.subarray(4 * P, 5 * P), new Uint8Array(P), "page 4 never synced");
});

Deno.test("hardened under swiotlb: the same write and read are intact", () => {
  const rig = rigFor(82, "hardened", { iommu: "bounce" });
  const { user, tag } = premap(rig, 16 * P, 0);
  rig.kernel.rng.fill(user);
  const want = user.slice(5 * P, 8 * P);
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 5 * P, 3 * P), 0n), 3 * P);
  assert.deepEqual(mediaRead(rig, 0, 3 * P), want);
  user.fill(0);
  assert.equal(rw(rig, iovIterDmaTag("read", tag, 2 * P, 3 * P), 0n), 3 * P);
  assert.deepEqual(user.subarray(2 * P, 5 * P), want);
  assert.deepEqual(debugCounts(rig), {});
});

Deno.test("v2 under swiotlb, buffer at an offset: the page-base sync is caught by both checkers", () => {
  const rig = rigFor(84, "v2", { iommu: "bounce" });
  const { tag } = premap(rig, 8 * P, 512);
  const s0 = rig.kernel.stats.snapshot();
  // 3 pages from the buffer's start (4 controller pages): entry 0 is the page base before
  // the first mapping's handle.
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 0, 3 * P), 0n), 3 * P);
  const c = debugCounts(rig);
  assert.ok(c["sync-not-allocated"] >= 1, JSON.stringify(c));
  const warned = rig.kernel.stats.counters.swiotlbWarnings - s0.counters.swiotlbWarnings;
  assert.ok(warned >= 1);
  assert.ok(
    rig.host.dmaSetup.swiotlb!.warnings.some((w) =>
      /Access before mapping start detected\. orig offset 512, requested offset 0\./.test(w.message)
    ),
  );
});

Deno.test("v3 under swiotlb: the first sync's length is PAGE - whole offset, a size_t near 2^64", () => {
  const rig = rigFor(85, "v3", { iommu: "bounce" });
  const { tag } = premap(rig, 8 * P, 0);
  const s0 = rig.kernel.stats.snapshot();
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 3 * P, P), 0n), P);
  assert.equal(rig.host.dmaSetup.debug!.counts["sync-outside-range"], 1);
  assert.match(
    rig.host.dmaSetup.debug!.events[0].message,
    /syncs DMA memory outside allocated range .*\[allocation size=4096 bytes\]/,
  );
  assert.equal(rig.kernel.stats.counters.swiotlbWarnings - s0.counters.swiotlbWarnings, 1);
  assert.match(
    rig.host.dmaSetup.swiotlb!.warnings.at(-1)!.message,
    /Buffer overflow detected\. Allocation size: 4096\. Mapping size: 1844674407370954/,
  );
  // The same I/O on v2 masks first: no report.
  const r2 = rigFor(85, "v2", { iommu: "bounce" });
  const b = premap(r2, 8 * P, 0);
  assert.equal(rw(r2, iovIterDmaTag("write", b.tag, 3 * P, P), 0n), P);
  assert.deepEqual(debugCounts(r2), {});
});

Deno.test("v3: nvme_premapped_slow copies from an uninitialised index: the wrong pages move", () => {
  const rig = rigFor(86, "v3", { mdts: 10 });
  const { user, tag } = premap(rig, 600 * P, 0);
  for (let i = 0; i < 600; i++) user.fill(i & 0xff, i * P, (i + 1) * P);
  // Pages 500..519: PRP1 = entry 500, list entries 501..519 cross the array's first page
  // (entry 511 is its last slot), so they are copied, from mapping->prps[i], i unset.
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 500 * P, 20 * P), 0n), 20 * P);
  const got = mediaRead(rig, 0, 20 * P);
  assert.equal(got[0], 500 & 0xff);
  // i was 0 (a fresh request): the list named pages 0..18 instead of 501..519.
  for (let j = 1; j < 20; j++) assert.equal(got[j * P], (j - 1) & 0xff, `media page ${j}`);
  // All of it mapped: no DMA report. Only the bytes (or clang's -Wuninitialized) show it.
  assert.deepEqual(debugCounts(rig), {});
  // The same request slot again: `i` still holds where the last copy stopped (19).
  assert.equal(rw(rig, iovIterDmaTag("write", tag, 500 * P, 20 * P), 0n), 20 * P);
  const again = mediaRead(rig, 0, 20 * P);
  for (let j = 1; j < 20; j++) assert.equal(again[j * P], (18 + j) & 0xff, `media page ${j}`);
});

Deno.test("v3 with a stale index past the array: KASAN out-of-bounds, the device fails the PRPs", () => {
  const rig = rigFor(87, "v3", { iommu: "off", mdts: 10, queueDepth: 1 });
  const { tag } = premap(rig, 600 * P, 0);
  // Each copy leaves i 19 further on; after 31 passes it runs past entry 599.
  let res = 0;
  for (let n = 0; n < 32 && res >= 0; n++) {
    res = rw(rig, iovIterDmaTag("write", tag, 500 * P, 20 * P), 0n);
  }
  assert.ok(rig.host.driver.kasanReports.length > 0);
  assert.equal(rig.host.driver.kasanReports[0].kind, "out-of-bounds");
  assert.match(rig.host.driver.kasanReports[0].message, /out-of-bounds in nvme_premapped_slow/);
  assert.ok(rig.kernel.stats.counters.kasanReports > 0);
});

Deno.test("hardened: the same slow-path copies are right", () => {
  const rig = rigFor(86, "hardened", { mdts: 10 });
  const { user, tag } = premap(rig, 600 * P, 0);
  for (let i = 0; i < 600; i++) user.fill(i & 0xff, i * P, (i + 1) * P);
  for (let pass = 0; pass < 2; pass++) {
    assert.equal(rw(rig, iovIterDmaTag("write", tag, 500 * P, 20 * P), 0n), 20 * P);
    const got = mediaRead(rig, 0, 20 * P);
    for (let j = 0; j < 20; j++) assert.equal(got[j * P], (500 + j) & 0xff);
  }
  assert.equal(rig.host.driver.kasanReports.length, 0);
  assert.deepEqual(debugCounts(rig), {});
});
