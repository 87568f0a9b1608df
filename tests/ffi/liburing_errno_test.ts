/**
 * The exact errno the live kernel returns for each misuse, determined by
 * running it on this kernel (6.x) and asserted here.
 */
import assert from "node:assert/strict";
import { allocBuffer, O } from "../../ffi/libc.ts";
import { liburing, LiveRing } from "../../ffi/liburing.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import {
  encodeMapBuffers,
  encodeRsrcRegister,
  encodeRsrcUpdate2,
  IORING_OP as OP,
  IORING_REGISTER,
  IORING_REGISTER_MAP_BUFFERS,
  IORING_REGISTER_UNMAP_BUFFERS,
  IORING_RSRC_REGISTER_SPARSE,
  IOSQE,
  PARAMS,
  PROBE,
  type SqeFields,
} from "../../sim/uapi/io_uring.ts";
import { ignore, newRing, TempFiles } from "./_live.ts";

const KB = 1024;

/** Submit one SQE and return its CQE result. */
function run(ring: LiveRing, f: SqeFields): number {
  assert.ok(ring.prep({ ...f, userData: 0xabcn }));
  assert.equal(ring.submit(1), 1);
  const c = ring.reap();
  assert.equal(c.length, 1);
  assert.equal(c[0].userData, 0xabcn);
  return c[0].res;
}

Deno.test({
  name: "errno: registered-buffer misuse",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("d", O.RDWR | O.CREAT | O.DIRECT, 64 * KB);
    using ring = newRing(4);
    using buf = allocBuffer(64 * KB);
    const rf = (addr: bigint, bufIndex: number) =>
      run(ring, { opcode: OP.READ_FIXED, fd, addr, len: 4096, bufIndex });
    // No buffer table at all.
    assert.equal(rf(buf.addr, 0), -Errno.EFAULT);
    assert.equal(ring.registerBuffers([{ addr: buf.addr, len: 64 * KB }]).res, 0);
    // Registered twice.
    assert.equal(ring.registerBuffers([{ addr: buf.addr, len: 64 * KB }]).res, -Errno.EBUSY);
    // Unregistered index.
    assert.equal(rf(buf.addr, 1), -Errno.EFAULT);
    // Address outside the buffer: straddling its end, and below its start.
    assert.equal(rf(buf.addr + BigInt(64 * KB - 2048), 0), -Errno.EFAULT);
    assert.equal(rf(buf.addr - 4096n, 0), -Errno.EFAULT);
    assert.equal(rf(buf.addr, 0), 4096);
    assert.equal(ring.unregisterBuffers().res, 0);
    assert.equal(ring.unregisterBuffers().res, -Errno.ENXIO);
    assert.equal(ring.updateBuffers(0, [{ addr: buf.addr, len: 4096 }]).res, -Errno.ENXIO);
  },
});

Deno.test({
  name: "errno: fixed-file misuse",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("f", O.RDWR | O.CREAT, 8192);
    using ring = newRing(4);
    using buf = allocBuffer(4096);
    const rd = (slot: number) =>
      run(ring, { opcode: OP.READ, fd: slot, flags: IOSQE.FIXED_FILE, addr: buf.addr, len: 512 });
    assert.equal(rd(0), -Errno.EBADF, "no file table");
    assert.equal(ring.registerFiles([fd, -1]).res, 0);
    assert.equal(ring.registerFiles([fd]).res, -Errno.EBUSY, "registered twice");
    assert.equal(rd(2), -Errno.EBADF, "index out of range");
    assert.equal(rd(1), -Errno.EBADF, "sparse slot");
    assert.equal(rd(0), 512);
    assert.equal(ring.unregisterFiles().res, 0);
    assert.equal(ring.unregisterFiles().res, -Errno.ENXIO);
    assert.equal(ring.updateFiles(0, [fd]).res, -Errno.ENXIO);
  },
});

Deno.test({
  name: "errno: misaligned O_DIRECT (address, offset, length) -> -EINVAL",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("d", O.RDWR | O.CREAT | O.DIRECT);
    using ring = newRing(4);
    using buf = allocBuffer(64 * KB);
    // Holes are not checked for alignment: write real blocks first.
    assert.equal(t.libc.pwrite(fd, buf.addr, 64 * KB, 0), 64 * KB);
    assert.equal(t.libc.pwrite(fd, buf.addr + 1n, 4096, 0), -Errno.EINVAL);
    const rd = (addr: bigint, len: number, off: bigint) =>
      run(ring, { opcode: OP.READ, fd, addr, len, off });
    assert.equal(rd(buf.addr + 1n, 4096, 0n), -Errno.EINVAL);
    assert.equal(rd(buf.addr + 4n, 4096, 0n), -Errno.EINVAL);
    assert.equal(rd(buf.addr, 4096, 7n), -Errno.EINVAL);
    assert.equal(rd(buf.addr, 100, 0n), -Errno.EINVAL);
    assert.equal(rd(buf.addr + 512n, 4096, 512n), 4096, "logical-block aligned is fine");
    assert.equal(run(ring, { opcode: OP.WRITE, fd, addr: buf.addr + 1n, len: 4096 }), -22);
  },
});

Deno.test({
  name: "errno: bad opcode, bad SQE flag, nonzero reserved SQE fields -> -EINVAL",
  ignore,
  fn: () => {
    using t = new TempFiles();
    const fd = t.open("f", O.RDWR | O.CREAT, 8192);
    using ring = newRing(4);
    using buf = allocBuffer(4096);
    const EINVAL = -Errno.EINVAL;
    assert.equal(run(ring, { opcode: 250 }), EINVAL, "opcode past IORING_OP_LAST");
    assert.equal(run(ring, { opcode: OP.NOP, flags: 0x80 }), EINVAL, "unknown IOSQE bit");
    assert.equal(run(ring, { opcode: OP.NOP, rwFlags: 0x80000000 }), EINVAL, "nop_flags");
    assert.equal(run(ring, { opcode: OP.FSYNC, fd, addr: 1n }), EINVAL, "fsync addr");
    assert.equal(run(ring, { opcode: OP.FSYNC, fd, bufIndex: 1 }), EINVAL, "fsync buf_index");
    assert.equal(run(ring, { opcode: OP.FSYNC, fd, fileIndex: 1 }), EINVAL, "fsync file_index");
    assert.equal(run(ring, { opcode: OP.FSYNC, fd, rwFlags: 2 }), EINVAL, "fsync_flags");
    assert.equal(run(ring, { opcode: OP.MSG_RING, fd: ring.fd, bufIndex: 1 }), EINVAL);
    assert.equal(
      run(ring, { opcode: OP.READ, fd, addr: buf.addr, len: 10, personality: 5 }),
      EINVAL,
      "unknown personality",
    );
    assert.equal(run(ring, { opcode: OP.READV, fd, addr: buf.addr, len: 2000 }), EINVAL);
    assert.equal(run(ring, { opcode: OP.FSYNC, fd }), 0, "the same SQE, clean, succeeds");
  },
});

Deno.test({
  name: "errno: register-call reserved fields and flags -> -EINVAL",
  ignore,
  fn: () => {
    using ring = newRing(4);
    const R = IORING_REGISTER;
    const rsrc = encodeRsrcRegister(4, IORING_RSRC_REGISTER_SPARSE, 0n);
    rsrc[8] = 1; // resv2
    assert.equal(ring.register(R.REGISTER_FILES2, rsrc, rsrc.length), -Errno.EINVAL);
    const badFlags = encodeRsrcRegister(4, 2, 0n);
    assert.equal(ring.register(R.REGISTER_FILES2, badFlags, 32), -Errno.EINVAL);
    const upd = encodeRsrcUpdate2(0, 0n, 0);
    upd[4] = 1; // resv
    assert.equal(ring.register(R.REGISTER_FILES_UPDATE2, upd, 32), -Errno.EINVAL);
    const upd2 = encodeRsrcUpdate2(0, 0n, 0);
    upd2[28] = 1; // resv2
    assert.equal(ring.register(R.REGISTER_FILES_UPDATE2, upd2, 32), -Errno.EINVAL);
    const probe = new Uint8Array(PROBE.SIZE + 4 * PROBE.OP_SIZE);
    probe[5] = 1; // the kernel wants a zeroed probe
    assert.equal(ring.register(R.REGISTER_PROBE, probe, 4), -Errno.EINVAL);
    // io_uring_setup() with nonzero params.resv.
    const params = new Uint8Array(PARAMS.SIZE);
    params[PARAMS.resv] = 1;
    const struct = new Uint8Array(216);
    const sym = liburing();
    assert.ok(sym);
    assert.equal(
      sym.io_uring_queue_init_params(
        4,
        Deno.UnsafePointer.of(struct),
        Deno.UnsafePointer.of(params),
      ),
      -Errno.EINVAL,
    );
    assert.deepEqual(LiveRing.create(0), { res: -Errno.EINVAL, ok: false, errno: "EINVAL" });
    assert.deepEqual(LiveRing.create(8, { cqEntries: 4 }), {
      res: -Errno.EINVAL,
      ok: false,
      errno: "EINVAL",
    });
  },
});

Deno.test({
  name: "register opcodes 38/39 return -EINVAL without reaching the kernel",
  ignore,
  fn: () => {
    using ring = newRing(4);
    const arg = encodeMapBuffers(0, 0, 1);
    const before = ring.kernelRegisterCalls;
    assert.equal(ring.register(IORING_REGISTER_MAP_BUFFERS, arg, 1), -Errno.EINVAL);
    assert.equal(ring.register(IORING_REGISTER_UNMAP_BUFFERS, arg, 1), -Errno.EINVAL);
    assert.deepEqual(ring.toRing().mapBuffers(0, 0, 1), {
      res: -Errno.EINVAL,
      ok: false,
      errno: "EINVAL",
    });
    assert.equal(ring.kernelRegisterCalls, before, "no io_uring_register(2) issued");
    // Other opcodes do go to the kernel.
    assert.equal(ring.register(IORING_REGISTER.UNREGISTER_FILES, null, 0), -Errno.ENXIO);
    assert.equal(ring.kernelRegisterCalls, before + 1);
    // The emulated controller's hook receives them instead, bytes intact.
    const seen: [number, number, number][] = [];
    ring.setMapHandler((op, a, nr) => {
      seen.push([op, a?.[8] ?? -1, nr]);
      return -Errno.EOPNOTSUPP;
    });
    assert.equal(ring.register(IORING_REGISTER_MAP_BUFFERS, arg, 1), -Errno.EOPNOTSUPP);
    assert.deepEqual(seen, [[38, 1, 1]]);
    ring.setMapHandler(null);
    assert.equal(ring.register(IORING_REGISTER_UNMAP_BUFFERS, arg, 1), -Errno.EINVAL);
    assert.equal(ring.kernelRegisterCalls, before + 1);
  },
});

Deno.test({
  name: "a disposed ring refuses use; dispose is idempotent",
  ignore,
  fn: () => {
    const ring = newRing(2);
    ring[Symbol.dispose]();
    ring[Symbol.dispose]();
    assert.throws(() => ring.submit(0), /after dispose/);
    assert.throws(() => ring.enter(0, 0, 0), /after dispose/);
    assert.throws(() => ring.register(IORING_REGISTER.REGISTER_PROBE, null, 0), /after dispose/);
  },
});

Deno.test({
  name:
    "io_uring_enter: an unknown flag is -EINVAL; to_submit past the published SQEs submits those",
  ignore,
  fn: () => {
    using ring = newRing(4);
    assert.equal(ring.enter(0, 0, 1 << 30), -Errno.EINVAL);
    assert.ok(ring.prepNop(1));
    assert.equal(ring.flushSq(), 1);
    assert.equal(ring.enter(3, 0, 0), 1);
    assert.deepEqual(ring.reap(), [{ userData: 1n, res: 0, flags: 0 }]);
  },
});
