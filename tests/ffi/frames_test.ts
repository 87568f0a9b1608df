import assert from "node:assert/strict";
import { CoherentArena, type FrameTable, NativeFrames, POISON_FREE } from "../../ffi/frames.ts";
import { PhysMem } from "../../sim/memory/phys.ts";
import { UserMm } from "../../sim/memory/mm.ts";
import { allocBuffer } from "../../ffi/libc.ts";
import { Errno } from "../../sim/uapi/errno.ts";

/** A frame table that records what a device would be told. */
class RecordingTable implements FrameTable {
  readonly frames = new Map<number, bigint>();
  frameMap(pfn: number, n: number, ptr: Deno.PointerObject): void {
    const base = BigInt(Deno.UnsafePointer.value(ptr));
    for (let i = 0; i < n; i++) {
      assert.equal(this.frames.has(pfn + i), false, `pfn ${pfn + i} mapped twice`);
      this.frames.set(pfn + i, base + BigInt(i * 4096));
    }
  }
  frameUnmap(pfn: number, n: number): void {
    for (let i = 0; i < n; i++) assert.equal(this.frames.delete(pfn + i), true);
  }
}

Deno.test("native frames: kernel frames live in the arena, the device table follows every alloc and free, freed storage is poisoned", () => {
  using arena = new CoherentArena(64 * 4096);
  const frames = new NativeFrames(arena);
  const phys = new PhysMem({ seed: 1, backing: frames, quarantineFrames: 4 });
  const early = phys.allocContig(2); // before any device: replayed at attach
  const table = new RecordingTable();
  frames.attach(table);
  assert.equal(table.frames.size, 2);
  const pfn = phys.allocContig(3);
  assert.equal(table.frames.size, 5);
  const page = phys.page(pfn + 1)!;
  page.data.set([1, 2, 3]);
  // The device's pointer for pfn+1 names the very bytes the host wrote.
  const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(table.frames.get(pfn + 1)!)!);
  assert.deepEqual([view.getUint8(0), view.getUint8(1), view.getUint8(2)], [1, 2, 3]);
  const storage = page.data;
  phys.freeContig(pfn, 3);
  // Freed, poisoned, and still on the bus: a device holding a stale address reads poison.
  assert.equal(table.frames.size, 5);
  assert.equal(phys.quarantinedFrames, 3);
  assert.equal(phys.page(pfn), undefined);
  assert.equal(storage[0], POISON_FREE);
  assert.equal(storage.every((b) => b === POISON_FREE), true);
  assert.deepEqual([view.getUint8(0), view.getUint8(1)], [POISON_FREE, POISON_FREE]);
  // Quarantined storage is never handed out again.
  const again = phys.allocContig(1);
  assert.notEqual(phys.page(again)!.data.byteOffset, storage.byteOffset);
  phys.freeContig(again, 1);
  assert.equal(table.frames.size, 6);
  // Over the quarantine's 4 frames the oldest run leaves it and the device's table.
  phys.freeContig(early, 2);
  assert.equal(phys.quarantinedFrames, 3);
  assert.equal(table.frames.size, 3);
  assert.equal(arena.quarantinedPages, 3);
  assert.equal(frames.liveFrames, 3);
});

Deno.test("native frames: a native buffer mirrored at its real address is registered frame by frame", () => {
  using arena = new CoherentArena(16 * 4096);
  const frames = new NativeFrames(arena);
  const table = new RecordingTable();
  frames.attach(table);
  const phys = new PhysMem({ seed: 2, backing: frames });
  const mm = new UserMm(phys);
  using buf = allocBuffer(3 * 4096);
  const vma = mm.mmapFixed(buf.addr, buf.bytes);
  assert.equal(typeof vma, "object");
  if (typeof vma === "number") return;
  assert.equal(table.frames.size, 3);
  for (let i = 0; i < 3; i++) {
    assert.equal(table.frames.get(vma.pages[i].pfn), buf.addr + BigInt(i * 4096));
  }
  assert.equal(mm.mmapFixed(buf.addr + 4096n, buf.bytes.subarray(0, 4096)), -Errno.EEXIST);
  assert.equal(mm.mmapFixed(buf.addr + 1n, buf.bytes.subarray(0, 4096)), -Errno.EINVAL);
  const t = mm.translate(buf.addr + 4096n + 7n)!;
  assert.equal(t.offset, 7);
  assert.equal(t.page, vma.pages[1]);
  assert.equal(mm.munmap(buf.addr), 0);
  assert.equal(table.frames.size, 0);
  // User storage is the application's: freeing the frame does not poison it.
  assert.equal(buf.bytes[0], 0);
});
