/**
 * The simulated files: fd table (lowest free descriptor, limits), open
 * errnos, device nodes, in-memory regular files.
 */

import assert from "node:assert/strict";
import { Kernel } from "../../sim/kernel.ts";
import { FdTable, filesOf } from "../../sim/fs/fdtable.ts";
import { doSysOpen, filpOpen, lookupInode, sysClose, sysUnlink } from "../../sim/fs/namei.ts";
import { type File, fput } from "../../sim/fs/file.ts";
import { ShmemInode } from "../../sim/fs/shmem.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import { O } from "../../sim/uapi/io_uring.ts";

Deno.test("fdtable: lowest free descriptor, close, -EBADF, -EMFILE", () => {
  const k = new Kernel();
  const t = new FdTable(3);
  const f = () => filpOpen(k, "/x", O.RDWR | O.CREAT) as File;
  assert.equal(t.install(f()), 0);
  assert.equal(t.install(f()), 1);
  assert.equal(t.install(f()), 2);
  const extra = f();
  assert.equal(t.install(extra), -Errno.EMFILE);
  assert.equal(t.close(1), 0);
  assert.equal(t.close(1), -Errno.EBADF);
  assert.equal(t.close(-1), -Errno.EBADF);
  assert.equal(t.install(extra), 1);
  assert.equal(t.openCount, 3);
  t[Symbol.dispose]();
  assert.equal(t.openCount, 0);
  assert.equal(extra.refcount, 0);
});

Deno.test("fdtable: a file is released when its last reference goes", () => {
  const k = new Kernel();
  let released = 0;
  const base = filpOpen(k, "/r", O.RDWR | O.CREAT) as File;
  const f: File = { ...base, fOp: { ...base.fOp, release: () => released++ } };
  const fd = filesOf(k).install(f);
  const ref = filesOf(k).fget(fd)!;
  assert.equal(ref.refcount, 2);
  assert.equal(sysClose(k, fd), 0);
  assert.equal(released, 0);
  assert.equal(filesOf(k).lookup(fd), undefined);
  fput(ref);
  assert.equal(released, 1);
  assert.equal(ref.refcount, 0);
});

Deno.test("open: errnos for missing, exclusive, directory and long names", () => {
  const k = new Kernel();
  assert.equal(doSysOpen(k, "/nope", O.RDONLY), -Errno.ENOENT);
  assert.equal(doSysOpen(k, "", O.RDONLY | O.CREAT), -Errno.ENOENT);
  assert.equal(doSysOpen(k, "/a", O.RDWR | O.CREAT | O.DIRECTORY), -Errno.EINVAL);
  assert.equal(doSysOpen(k, "/a", O.RDWR | O.CREAT | O.EXCL), 0);
  assert.equal(doSysOpen(k, "/a", O.RDWR | O.CREAT | O.EXCL), -Errno.EEXIST);
  assert.equal(doSysOpen(k, "/a", O.RDONLY | O.DIRECTORY), -Errno.ENOTDIR);
  assert.equal(doSysOpen(k, "/" + "n".repeat(256), O.RDWR | O.CREAT), -Errno.ENAMETOOLONG);
  assert.equal(doSysOpen(k, "/d/".repeat(1400), O.RDWR | O.CREAT), -Errno.ENAMETOOLONG);
  assert.equal(doSysOpen(k, "/dir/", O.RDWR | O.CREAT), -Errno.EISDIR);
  assert.equal(doSysOpen(k, "/a", O.RDWR), 1);
  assert.equal(sysUnlink(k, "/a"), 0);
  assert.equal(sysUnlink(k, "/a"), -Errno.ENOENT);
  assert.equal(doSysOpen(k, "/a", O.RDWR), -Errno.ENOENT);
});

Deno.test("open: O_TRUNC empties; access mode sets canRead/canWrite", () => {
  const k = new Kernel();
  const f = filpOpen(k, "/t", O.WRONLY | O.CREAT) as File;
  assert.equal(f.canRead, false);
  assert.equal(f.canWrite, true);
  const inode = lookupInode(k, "/t")!;
  assert.equal(inode.writeAt(0, new Uint8Array([1, 2, 3])), 0);
  assert.equal(inode.size(), 3n);
  const g = filpOpen(k, "/t", O.RDONLY) as File;
  assert.equal(g.canRead, true);
  assert.equal(g.canWrite, false);
  assert.equal(inode.size(), 3n);
  filpOpen(k, "/t", O.RDWR | O.TRUNC);
  assert.equal(inode.size(), 0n);
});

Deno.test("open: device nodes go to their opener; O_EXCL|O_CREAT on one is -EEXIST", () => {
  const k = new Kernel();
  const seen: [string, number][] = [];
  k.devices.set("/dev/x", (p, flags) => {
    seen.push([p, flags]);
    return -Errno.ENXIO;
  });
  assert.equal(doSysOpen(k, "/dev/x", O.RDWR | O.DIRECT), -Errno.ENXIO);
  assert.deepEqual(seen, [["/dev/x", O.RDWR | O.DIRECT]]);
  assert.equal(doSysOpen(k, "/dev/x", O.RDWR | O.CREAT | O.EXCL), -Errno.EEXIST);
  assert.equal(seen.length, 1);
});

Deno.test("shmem: sparse writes read back zeros; truncate shrinks and clears", () => {
  const i = new ShmemInode();
  assert.equal(i.writeAt(5000, new Uint8Array([9, 9])), 0);
  assert.equal(i.size(), 5002n);
  assert.deepEqual(i.readAt(4998, 10), new Uint8Array([0, 0, 9, 9]));
  assert.equal(i.truncate(5001), 0);
  assert.equal(i.truncate(6000), 0);
  assert.deepEqual(i.readAt(4999, 4), new Uint8Array([0, 9, 0, 0]));
  assert.deepEqual(i.readAt(7000, 4), new Uint8Array(0));
  assert.equal(i.truncate(2 ** 31), -Errno.ENOSPC);
});
