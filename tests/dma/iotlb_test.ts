import assert from "node:assert/strict";
import { Iotlb } from "../../sim/dma/iotlb.ts";
import { IOMMU_READ, IOMMU_WRITE } from "../../sim/dma/io_pgtable.ts";
import { Rng } from "../../sim/random.ts";

/** The IOTLB's contract stated the plain way: a Map kept in recency order (oldest first). */
class MapLru {
  readonly m = new Map<number, { pfn: number; prot: number }>();
  hits = 0;
  misses = 0;
  evictions = 0;
  constructor(readonly capacity: number) {}
  lookup(k: number) {
    const e = this.m.get(k);
    if (e === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.m.delete(k);
    this.m.set(k, e);
    return e;
  }
  fill(k: number, e: { pfn: number; prot: number }) {
    this.m.delete(k);
    if (this.m.size >= this.capacity) {
      this.m.delete(this.m.keys().next().value as number);
      this.evictions++;
    }
    this.m.set(k, { ...e });
  }
  invalidateRange(k: number, n: number) {
    let d = 0;
    for (let i = 0; i < n; i++) d += this.m.delete(k + i) ? 1 : 0;
    return d;
  }
}

Deno.test("iotlb: LRU order, hits, misses and evictions match a recency-ordered map over 200,000 random operations", () => {
  for (const capacity of [1, 4, 128]) {
    const rng = new Rng(capacity);
    const t = new Iotlb(capacity);
    const ref = new MapLru(capacity);
    const keys = capacity * 3;
    for (let step = 0; step < 200_000 / 3; step++) {
      const k = rng.int(keys) * 2 ** 20 + 7; // large IOVA page numbers
      const op = rng.int(16);
      if (op < 9) {
        assert.deepEqual(t.lookup(k), ref.lookup(k), `step ${step}: lookup ${k}`);
      } else if (op < 14) {
        const e = { pfn: rng.int(2 ** 30) * 1024 + rng.int(1024), prot: 1 + rng.int(3) };
        t.fill(k, e);
        ref.fill(k, e);
      } else if (op < 15) {
        const n = 1 + rng.int(4);
        assert.equal(t.invalidateRange(k, n), ref.invalidateRange(k, n));
      } else {
        assert.equal(t.has(k), ref.m.has(k));
      }
      assert.equal(t.size, ref.m.size);
    }
    assert.deepEqual([t.hits, t.misses, t.evictions], [ref.hits, ref.misses, ref.evictions]);
    assert.ok(t.evictions > 0 && t.hits > 0, `capacity ${capacity}: the run exercised eviction`);
    t.flushAll();
    assert.equal(t.size, 0);
    assert.equal(t.lookup(7), undefined);
  }
});

Deno.test("iotlb: a fill of a cached page replaces its leaf and makes it most recent, evicting nothing", () => {
  const t = new Iotlb(2);
  t.fill(1, { pfn: 10, prot: IOMMU_READ });
  t.fill(2, { pfn: 20, prot: IOMMU_READ });
  t.fill(1, { pfn: 11, prot: IOMMU_READ | IOMMU_WRITE });
  assert.equal(t.evictions, 0);
  t.fill(3, { pfn: 30, prot: IOMMU_WRITE }); // evicts 2, the least recent
  assert.equal(t.has(2), false);
  assert.deepEqual(t.lookup(1), { pfn: 11, prot: IOMMU_READ | IOMMU_WRITE });
  assert.deepEqual(t.lookup(3), { pfn: 30, prot: IOMMU_WRITE });
  assert.equal(t.evictions, 1);
});
