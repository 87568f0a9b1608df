/**
 * Path lookup and open (fs/namei.c path_openat, fs/open.c do_sys_open).
 *
 * A path names either a device node registered in `kernel.devices` (such as
 * /dev/nvme0n1, opened by its driver) or a regular file in the host's one
 * in-memory filesystem ({@link ShmemInode}). There are no directories: a
 * path is a name.
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import { Errno } from "../uapi/errno.ts";
import { O } from "../uapi/io_uring.ts";
import { filesOf } from "./fdtable.ts";
import { type File, fput } from "./file.ts";
import { shmemFileOperations, ShmemInode, shmemOpenFile } from "./shmem.ts";

/** PATH_MAX */
export const PATH_MAX = 4096;
/** NAME_MAX */
export const NAME_MAX = 255;
/** Most regular files the in-memory filesystem holds (beyond: -ENOSPC). */
export const MAX_INODES = 4096;

/** The in-memory namespace of one simulated host: names to inodes. */
export class Namespace {
  /** Regular files by path. */
  readonly inodes = new Map<string, ShmemInode>();
}

/** The host's filesystem namespace (like `current->fs`'s root; {@link Kernel.namespace}). */
export function namespaceOf(kernel: Kernel): Namespace {
  return kernel.namespace;
}

/** getname() checks: -ENOENT for "", -ENAMETOOLONG for an over-long path or component. */
function checkName(path: string): number {
  if (path.length === 0) return -Errno.ENOENT;
  if (path.length >= PATH_MAX) return -Errno.ENAMETOOLONG;
  if (path.split("/").some((c) => c.length > NAME_MAX)) return -Errno.ENAMETOOLONG;
  return 0;
}

/** build_open_flags(): flag combinations the kernel rejects up front. */
function buildOpenFlags(flags: number): number {
  if ((flags & O.CREAT) && (flags & O.DIRECTORY)) return -Errno.EINVAL;
  return 0;
}

/** filp_open(): open `path` and return the file (one reference) or a negative errno. */
export function filpOpen(kernel: Kernel, path: string, flags: number): File | number {
  const bad = buildOpenFlags(flags) || checkName(path);
  if (bad) return bad;
  const dev = kernel.devices.get(path);
  if (dev) {
    if ((flags & O.CREAT) && (flags & O.EXCL)) return -Errno.EEXIST;
    if (flags & O.DIRECTORY) return -Errno.ENOTDIR;
    return dev(path, flags);
  }
  if (path.endsWith("/")) return (flags & O.CREAT) ? -Errno.EISDIR : -Errno.ENOENT;
  const ns = namespaceOf(kernel);
  let inode = ns.inodes.get(path);
  if (!inode) {
    if (!(flags & O.CREAT)) return -Errno.ENOENT;
    if (ns.inodes.size >= MAX_INODES) return -Errno.ENOSPC;
    inode = new ShmemInode();
    ns.inodes.set(path, inode);
  } else {
    if ((flags & O.CREAT) && (flags & O.EXCL)) return -Errno.EEXIST;
    if (flags & O.DIRECTORY) return -Errno.ENOTDIR;
    if (flags & O.TRUNC) inode.truncate(0);
  }
  return shmemOpenFile(path, inode, flags, shmemFileOperations(kernel.mm));
}

/** do_sys_open(): open `path` into the lowest free descriptor; fd or a negative errno. */
export function doSysOpen(kernel: Kernel, path: string, flags: number): number {
  const f = filpOpen(kernel, path, flags);
  if (typeof f === "number") return f;
  const fd = filesOf(kernel).install(f);
  if (fd < 0) fput(f);
  return fd;
}

/** close(2). */
export function sysClose(kernel: Kernel, fd: number): number {
  return filesOf(kernel).close(fd);
}

/** unlink(2) for a regular file: 0 or -ENOENT. Open files keep their inode. */
export function sysUnlink(kernel: Kernel, path: string): number {
  const bad = checkName(path);
  if (bad) return bad;
  return namespaceOf(kernel).inodes.delete(path) ? 0 : -Errno.ENOENT;
}

/** The inode of a regular file by path (for tests and diagnostics). */
export function lookupInode(kernel: Kernel, path: string): ShmemInode | undefined {
  return namespaceOf(kernel).inodes.get(path);
}
