import assert from "node:assert/strict";
import { allocBuffer, Libc, MAX_BUFFER_BYTES, O } from "../../ffi/libc.ts";
import { Errno } from "../../sim/uapi/errno.ts";

let why: string | null = null;
try {
  Libc.open();
} catch (e) {
  why = `libc.so.6 via FFI: ${(e as Error).message}`;
  console.log(`SKIP libc tests: ${why}`);
}

Deno.test({
  name: "libc: file calls return results or the exact negative errno",
  ignore: why !== null,
  fn: () => {
    using libc = Libc.open();
    const dir = Deno.makeTempDirSync({ dir: "/tmp", prefix: "premap-libc-" });
    try {
      assert.equal(libc.open(`${dir}/missing`, O.RDONLY), -Errno.ENOENT);
      assert.equal(libc.unlink(`${dir}/missing`), -Errno.ENOENT);
      assert.equal(libc.close(-1), -Errno.EBADF);
      const fd = libc.open(`${dir}/f`, O.RDWR | O.CREAT | O.EXCL, 0o600);
      assert.ok(fd >= 0);
      assert.equal(libc.open(`${dir}/f`, O.RDWR | O.CREAT | O.EXCL, 0o600), -Errno.EEXIST);
      using buf = allocBuffer(8192);
      buf.bytes.set([1, 2, 3, 4], 4096);
      assert.equal(libc.pwrite(fd, buf.addr + 4096n, 4, 10), 4);
      assert.equal(libc.ftruncate(fd, 12), 0);
      assert.equal(libc.fsync(fd), 0);
      assert.equal(libc.pread(fd, buf.addr, 100, 0), 12);
      assert.deepEqual([...buf.bytes.subarray(0, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
      assert.equal(libc.pread(fd, buf.addr, 10, -1), -Errno.EINVAL);
      assert.equal(libc.ftruncate(fd, -1), -Errno.EINVAL);
      assert.equal(libc.close(fd), 0);
      assert.equal(libc.close(fd), -Errno.EBADF);
      assert.equal(libc.pread(fd, buf.addr, 10, 0), -Errno.EBADF);
      assert.equal(libc.unlink(`${dir}/f`), 0);
      assert.throws(() => libc.open("a\0b", O.RDONLY), TypeError);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "libc: allocBuffer is page aligned, zeroed, bounded, and detached on dispose",
  ignore: why !== null,
  fn: () => {
    const b = allocBuffer(5000);
    assert.equal(b.addr % 4096n, 0n);
    assert.equal(b.bytes.length, 5000);
    assert.ok(b.bytes.every((x) => x === 0));
    const view = b.bytes;
    view[4999] = 7;
    b[Symbol.dispose]();
    assert.equal((view.buffer as ArrayBuffer).detached, true);
    assert.equal(view.length, 0);
    assert.equal(b.bytes.length, 0);
    b[Symbol.dispose](); // idempotent: no double free
    assert.throws(() => allocBuffer(0), RangeError);
    assert.throws(() => allocBuffer(MAX_BUFFER_BYTES + 1), RangeError);
    assert.throws(() => allocBuffer(1.5), RangeError);
  },
});
