/**
 * Resource tags (IORING_REGISTER_FILES2/BUFFERS2 and the UPDATE2 calls with
 * a tag array): a tagged file slot or buffer posts a CQE with its tag as
 * user_data (res 0, flags 0) when it has left its table and its last
 * in-flight user is done, as io_free_rsrc_node() does.
 *
 * The in-flight cases keep an NVMe command on the simulated device; the last
 * test shows the same order on the live kernel with a read on an empty pipe
 * (the kernel's per-node references since 6.13: updating a buffer no I/O
 * uses posts its tag at once, whatever else is in flight).
 */

import assert from "node:assert/strict";
import {
  encodeRsrcRegister,
  encodeRsrcUpdate2,
  encodeSqe,
  IORING_OP,
  IORING_REGISTER,
  IOSQE,
  O,
} from "../../sim/uapi/io_uring.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { encodeIovecs } from "../../sim/uapi/ring_api.ts";
import { openTestbed } from "../../mod.ts";
import type { SimTestbed } from "../../sim/testbed.ts";
import type { Ring, UserBuffer } from "../../sim/uapi/ring_api.ts";
import { LiveRing, liveRingUnavailable } from "../../ffi/liburing.ts";
import { allocBuffer } from "../../ffi/libc.ts";

const R = IORING_REGISTER;

function world() {
  const tb = openTestbed({ backend: "sim", seed: 4 }) as SimTestbed;
  const ring = tb.ring({ entries: 8 });
  const bufs = [0, 1, 2].map(() => tb.allocBuffer(16384));
  const fd = tb.open(tb.nvmeDevice, O.RDWR | O.DIRECT);
  const mem = (b: Uint8Array): bigint => {
    const m = tb.allocBuffer(Math.max(16, b.length));
    m.bytes.set(b);
    return m.addr;
  };
  const tags = (t: number[]): bigint => {
    const b = new Uint8Array(8 * t.length);
    t.forEach((x, i) => new DataView(b.buffer).setBigUint64(8 * i, BigInt(x), true));
    return mem(b);
  };
  const iovs = (bs: (UserBuffer | null)[]): bigint =>
    mem(encodeIovecs(bs.map((b) => b ? { addr: b.addr, len: 16384 } : { addr: 0n, len: 0 })));
  const fds = (f: number[]): bigint => {
    const b = new Uint8Array(4 * f.length);
    f.forEach((x, i) => new DataView(b.buffer).setInt32(4 * i, x, true));
    return mem(b);
  };
  return { tb, ring, bufs, fd, tags, iovs, fds };
}

const cqes = (ring: Ring) => ring.reap().map((c) => [Number(c.userData), c.res, c.flags]);

Deno.test("tags: a buffer in use by NVMe I/O posts its tag after the I/O's CQE; an idle one at once", () => {
  const { tb, ring, bufs, fd, tags, iovs } = world();
  const reg = encodeRsrcRegister(3, 0, iovs(bufs), tags([101, 102, 103]));
  assert.equal(ring.raw.register(R.REGISTER_BUFFERS2, reg, 32), 0);
  ring.readFixed(fd, bufs[0].addr, 4096, 0n, 0, { userData: 1n });
  assert.equal(ring.submit(0).res, 1);
  assert.equal(tb.host.driver.outstandingCommands, 1);
  // Buffer 1 is idle: replacing it posts 102 now. Buffer 0 is in use: 101 waits for the read.
  const upd1 = encodeRsrcUpdate2(1, iovs([bufs[2]]), 1, tags([0]));
  assert.equal(ring.raw.register(R.REGISTER_BUFFERS_UPDATE, upd1, 32), 1);
  assert.deepEqual(cqes(ring), [[102, 0, 0]]);
  const upd0 = encodeRsrcUpdate2(0, iovs([bufs[2]]), 1, tags([0]));
  assert.equal(ring.raw.register(R.REGISTER_BUFFERS_UPDATE, upd0, 32), 1);
  assert.deepEqual(cqes(ring), []);
  assert.equal(ring.submit(1).res, 0);
  assert.deepEqual(cqes(ring), [[1, 4096, 0], [101, 0, 0]]);
  // Unregister posts the remaining tags, last slot first; untagged slots post nothing.
  const upd2 = encodeRsrcUpdate2(1, iovs([bufs[1], bufs[0]]), 2, tags([7, 8]));
  assert.equal(ring.raw.register(R.REGISTER_BUFFERS_UPDATE, upd2, 32), 2);
  assert.deepEqual(cqes(ring), [[103, 0, 0]], "slot 2's buffer was replaced");
  assert.equal(ring.unregisterBuffers().res, 0);
  assert.deepEqual(cqes(ring), [[8, 0, 0], [7, 0, 0]]);
  tb[Symbol.dispose]();
});

Deno.test("tags: a fixed file slot replaced under NVMe I/O posts its tag when the I/O is freed", () => {
  const { tb, ring, bufs, fd, tags, fds } = world();
  const reg = encodeRsrcRegister(2, 0, fds([fd, fd]), tags([201, 202]));
  assert.equal(ring.raw.register(R.REGISTER_FILES2, reg, 32), 0);
  ring.read(0, bufs[0].addr, 4096, 0n, { flags: IOSQE.FIXED_FILE, userData: 1n });
  assert.equal(ring.submit(0).res, 1);
  assert.equal(ring.updateFiles(0, [-1]).res, 1);
  assert.equal(ring.updateFiles(1, [-1]).res, 1);
  assert.deepEqual(cqes(ring), [[202, 0, 0]]);
  assert.equal(ring.submit(1).res, 0);
  assert.deepEqual(cqes(ring), [[1, 4096, 0], [201, 0, 0]]);
  tb[Symbol.dispose]();
});

Deno.test("tags: -EINVAL rules; a failed registration posts no tag; a tag of 0 posts nothing", () => {
  const { tb, ring, bufs, fd, tags, iovs, fds } = world();
  // A tag on a sparse slot fails the whole registration, and no tag of it is posted.
  const bad = encodeRsrcRegister(3, 0, fds([fd, -1, fd]), tags([1, 2, 3]));
  assert.equal(ring.raw.register(R.REGISTER_FILES2, bad, 32), -Errno.EINVAL);
  assert.equal(
    ring.raw.register(R.REGISTER_FILES2, encodeRsrcRegister(2, 0, 0n, tags([0, 9])), 32),
    -Errno.EINVAL,
  );
  const badBufs = encodeRsrcRegister(2, 0, iovs([bufs[0], null]), tags([5, 6]));
  assert.equal(ring.raw.register(R.REGISTER_BUFFERS2, badBufs, 32), -Errno.EINVAL);
  assert.deepEqual(cqes(ring), []);
  // Removing or skipping with a tag is -EINVAL; a tag 0 slot posts nothing when replaced.
  assert.equal(
    ring.raw.register(R.REGISTER_FILES2, encodeRsrcRegister(2, 0, fds([fd, fd]), tags([0, 3])), 32),
    0,
  );
  for (const f of [-1, -2]) {
    const u = encodeRsrcUpdate2(0, fds([f]), 1, tags([4]));
    assert.equal(ring.raw.register(R.REGISTER_FILES_UPDATE2, u, 32), -Errno.EINVAL);
  }
  assert.equal(ring.updateFiles(0, [-1]).res, 1);
  assert.deepEqual(cqes(ring), []);
  assert.equal(ring.updateFiles(1, [-1]).res, 1);
  assert.deepEqual(cqes(ring), [[3, 0, 0]]);
  assert.equal(ring.updateFiles(1, [-1]).res, 1, "removing an empty slot");
  assert.deepEqual(cqes(ring), [], "posts no tag twice");
  tb[Symbol.dispose]();
});

const live = liveRingUnavailable();
Deno.test({
  name: "tags (live kernel): an idle buffer's tag posts at once, an in-use one after its read",
  ignore: live !== null,
  fn() {
    const lib = Deno.dlopen("libc.so.6", {
      pipe: { parameters: ["buffer"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
    });
    try {
      const p = new Int32Array(2);
      assert.equal(lib.symbols.pipe(new Uint8Array(p.buffer)), 0);
      const made = LiveRing.create(4);
      if (!("ring" in made)) throw new Error(`ring: ${made.res}`);
      using ring = made.ring;
      using b0 = allocBuffer(4096);
      using b1 = allocBuffer(4096);
      using iov = allocBuffer(4096);
      using tg = allocBuffer(4096);
      iov.bytes.set(encodeIovecs([{ addr: b0.addr, len: 4096 }, { addr: b1.addr, len: 4096 }]));
      const tv = new DataView(tg.bytes.buffer, tg.bytes.byteOffset);
      tv.setBigUint64(0, 101n, true);
      tv.setBigUint64(8, 102n, true);
      assert.equal(
        ring.register(R.REGISTER_BUFFERS2, encodeRsrcRegister(2, 0, iov.addr, tg.addr), 32),
        0,
      );
      ring.pushSqe(encodeSqe({
        opcode: IORING_OP.READ_FIXED,
        fd: p[0],
        addr: b0.addr,
        len: 10,
        bufIndex: 0,
        userData: 1n,
      }));
      assert.equal(ring.submit(0), 1);
      tv.setBigUint64(0, 0n, true);
      const upd = (off: number) => encodeRsrcUpdate2(off, iov.addr + BigInt(16 * off), 1, tg.addr);
      assert.equal(ring.register(R.REGISTER_BUFFERS_UPDATE, upd(1), 32), 1);
      assert.deepEqual(cqes(ring as unknown as Ring), [[102, 0, 0]]);
      assert.equal(ring.register(R.REGISTER_BUFFERS_UPDATE, upd(0), 32), 1);
      assert.deepEqual(cqes(ring as unknown as Ring), []);
      lib.symbols.close(p[1]); // EOF: the read completes with 0
      ring.waitCqes(2, 2e9);
      assert.deepEqual(cqes(ring as unknown as Ring), [[1, 0, 0], [101, 0, 0]]);
      lib.symbols.close(p[0]);
    } finally {
      lib.close();
    }
  },
});
