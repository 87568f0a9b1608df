import assert from "node:assert/strict";
import { createDma } from "../../sim/dma/mapping.ts";
import { poolGeometry } from "../../sim/dma/dmapool.ts";
import type { DmaPoolBlock } from "../../sim/dma/types.ts";
import { newKernel } from "./_helpers.ts";

Deno.test("dma_pool: blocks never cross the boundary; 5 per 512 bytes, 40 per page", () => {
  for (const mode of ["off", "strict"] as const) {
    const k = newKernel();
    using dma = createDma(k, { mode });
    const pool = dma.api.createPool("odd", 96, 32, 512);
    assert.equal(pool.size, 96);
    const blocks: DmaPoolBlock[] = [];
    for (let i = 0; i < 41; i++) blocks.push(pool.alloc()!);
    assert.equal(pool.inUse, 41);
    const base = blocks[0].dma;
    assert.equal(base & 0xfffn, 0n);
    // Offsets within the first page: 0,96,192,288,384 then the next 512 boundary.
    const offs = blocks.slice(0, 40).map((b) => Number(b.dma - base));
    const want: number[] = [];
    for (let seg = 0; seg < 8; seg++) for (let j = 0; j < 5; j++) want.push(seg * 512 + j * 96);
    assert.deepEqual(offs, want);
    for (const b of blocks) {
      assert.equal(b.dma / 512n, (b.dma + 95n) / 512n, `block 0x${b.dma.toString(16)} crosses`);
      assert.equal(b.cpu.length, 96);
    }
    assert.notEqual(blocks[40].dma & ~0xfffn, base); // 41st block: a second page
    // The device sees what the CPU writes into a block.
    blocks[3].cpu.set([1, 2, 3]);
    const r = dma.port.read(blocks[3].dma, 3) as Uint8Array;
    assert.deepEqual([...r], [1, 2, 3]);
    // LIFO reuse, double free caught.
    pool.free(blocks[7]);
    assert.throws(() => pool.free(blocks[7]), /already free/);
    assert.equal(pool.alloc()!.dma, blocks[7].dma);
    assert.equal(k.stats.counters.bytesAllocated >= 42 * 96, true);
  }
});

Deno.test("dma_pool: PRP list pool geometry and argument checks", () => {
  const k = newKernel();
  using dma = createDma(k, { mode: "lazy" });
  const prp = dma.api.createPool("prp list page", 4096, 4096, 0);
  const a = prp.alloc()!;
  const b = prp.alloc()!;
  assert.equal(a.dma & 0xfffn, 0n);
  assert.notEqual(a.dma, b.dma);
  const s0 = k.stats.counters.bytesAllocated;
  prp.free(a);
  prp.alloc();
  assert.equal(k.stats.counters.bytesAllocated - s0, 4096);
  assert.deepEqual(poolGeometry(256, 256, 0), { size: 256, allocation: 4096, boundary: 4096 });
  assert.deepEqual(poolGeometry(8, 0, 0), { size: 16, allocation: 4096, boundary: 4096 });
  assert.equal(poolGeometry(64, 3, 0), "align 3 is not a power of 2");
  assert.equal(poolGeometry(256, 8, 128), "boundary 128 smaller than size 256 or not a power of 2");
  assert.equal(poolGeometry(0, 8, 0), "size 0 out of range");
  assert.throws(() => dma.api.createPool("bad", 64, 3, 0), /dma_pool_create\(bad\): align 3/);
});
