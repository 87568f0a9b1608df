import assert from "node:assert/strict";
import { IOVA_MAG_SIZE, IovaDomain, MAX_GLOBAL_MAGS } from "../../sim/dma/iova.ts";

const LIMIT32 = 0xfffff;

Deno.test("iova: top-down, size-aligned below the limit", () => {
  const d = new IovaDomain(1);
  assert.equal(d.allocFast(1, LIMIT32, false), 0xfffff);
  assert.equal(d.allocFast(1, LIMIT32, false), 0xffffe);
  // 16 pages, aligned to 16: below 0xffffe -> 0xfffe0.
  assert.equal(d.allocFast(16, LIMIT32, false), 0xfffe0);
  // 3 pages round up to 4 (cacheable size), aligned to 4: below 0xfffe0 -> 0xfffdc.
  assert.equal(d.allocFast(3, LIMIT32, false), 0xfffdc);
  assert.deepEqual(d.ranges(), [
    { pfnLo: 0xfffdc, pfnHi: 0xfffdf },
    { pfnLo: 0xfffe0, pfnHi: 0xfffef },
    { pfnLo: 0xffffe, pfnHi: 0xffffe },
    { pfnLo: 0xfffff, pfnHi: 0xfffff },
  ]);
  assert.equal(d.stats.treeAllocs, 4);
  assert.equal(d.stats.rcacheMisses, 4);
  assert.equal(d.stats.rcacheHits, 0);
});

Deno.test("iova: a freed cacheable range goes to the rcache and comes back first", () => {
  const d = new IovaDomain(1);
  const a = d.allocFast(16, LIMIT32, false);
  const b = d.allocFast(16, LIMIT32, false);
  assert.equal(a, 0xffff0);
  assert.equal(b, 0xfffe0);
  d.freeFast(a, 16);
  // Still in the tree (the rcache keeps it reserved), now in size class 4.
  assert.equal(d.ranges().length, 2);
  assert.deepEqual(d.cachedPfns(4), [0xffff0]);
  assert.equal(d.allocFast(16, LIMIT32, false), 0xffff0);
  assert.equal(d.stats.rcacheHits, 1);
  assert.equal(d.stats.rcacheInserts, 1);
  assert.equal(d.stats.treeFrees, 0);
  // Another size class misses and goes to the tree.
  assert.equal(d.allocFast(8, LIMIT32, false), 0xfffd8);
  assert.equal(d.stats.rcacheMisses, 3);
});

Deno.test("iova: rcache pop honours the limit; a too-high pfn stays cached", () => {
  const d = new IovaDomain(1);
  const hi = d.allocFast(1, LIMIT32, false);
  d.freeFast(hi, 1);
  // Limit below the cached pfn: the rcache has nothing suitable, the tree serves it.
  assert.equal(d.allocFast(1, 0x7ffff, false), 0x7ffff);
  assert.deepEqual(d.cachedPfns(0), [0xfffff]);
  assert.equal(d.stats.rcacheMisses, 2);
});

Deno.test("iova: sizes of 64 pages are not cached: freed to the tree, gap reused", () => {
  const d = new IovaDomain(1);
  const a = d.allocFast(64, LIMIT32, false);
  const b = d.allocFast(64, LIMIT32, false);
  assert.equal(a, 0xfffc0);
  assert.equal(b, 0xfff80);
  d.freeFast(a, 64);
  assert.equal(d.stats.treeFrees, 1);
  assert.deepEqual(d.ranges(), [{ pfnLo: 0xfff80, pfnHi: 0xfffbf }]);
  // The cached node moved up past the freed range, so the gap is found again.
  assert.equal(d.allocFast(64, LIMIT32, false), 0xfffc0);
  assert.equal(d.stats.rcacheHits, 0);
});

Deno.test("iova: reserved ranges are skipped", () => {
  const d = new IovaDomain(1);
  d.reserve(0xfff00, 0xfffff);
  assert.equal(d.allocFast(1, LIMIT32, false), 0xffeff);
  assert.throws(() => d.reserve(0xffe00, 0xfff00), /overlaps/);
  assert.throws(() => d.free(0x1234), /free_iova: pfn 0x1234 not allocated/);
});

Deno.test("iova: exhaustion returns 0; flushing the rcache makes room", () => {
  // 16 usable pfns: 0xffff0..0xfffff.
  const d = new IovaDomain(0xffff0);
  const got: number[] = [];
  for (let i = 0; i < 16; i++) got.push(d.allocFast(1, LIMIT32, false));
  assert.deepEqual(got, Array.from({ length: 16 }, (_, i) => 0xfffff - i));
  assert.equal(d.allocFast(1, LIMIT32, false), 0);
  // Free two adjacent single pages into the rcache: a 2-page request cannot use them...
  d.freeFast(0xffff2, 1);
  d.freeFast(0xffff3, 1);
  assert.equal(d.allocFast(2, LIMIT32, false), 0);
  // ...until the rcache is drained back into the tree on retry.
  assert.equal(d.allocFast(2, LIMIT32, true), 0xffff2);
  assert.equal(d.stats.rcacheFlushes, 1);
  assert.equal(d.stats.treeFrees, 2);
});

Deno.test("iova: magazines fill, rotate to the depot, and overflow back to the tree", () => {
  const d = new IovaDomain(1);
  const n = IOVA_MAG_SIZE * (MAX_GLOBAL_MAGS + 2) + 1;
  const pfns: number[] = [];
  for (let i = 0; i < n; i++) pfns.push(d.allocFast(1, 0xfffffff, false));
  assert.equal(new Set(pfns).size, n);
  for (const p of pfns) d.freeFast(p, 1);
  // loaded + prev + 32 depot magazines are full; the next overflow freed one
  // magazine's worth back to the tree, and the last pfn sits in a fresh loaded one.
  const cached = d.cachedPfns(0).length;
  assert.equal(cached, n - IOVA_MAG_SIZE);
  assert.equal(d.stats.treeFrees, IOVA_MAG_SIZE);
  assert.equal(d.ranges().length, cached);
  // The last freed pfn is handed out first.
  assert.equal(d.allocFast(1, 0xfffffff, false), pfns[n - 1]);
});
