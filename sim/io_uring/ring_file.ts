/**
 * The ring's `struct file` (io_uring/io_uring.c io_uring_fops): ring
 * descriptors live in the process fd table like any file, and
 * io_is_uring_fops() tells a ring file from others.
 *
 * @module
 */

import type { File, FileOperations } from "../fs/file.ts";
import type { IoRingCtx } from "./io_uring_types.ts";

/** A ring context as reached through its file (for MSG_RING targets). */
export interface RingFileCtx extends IoRingCtx {
  /** IORING_SETUP_R_DISABLED still in force. */
  readonly disabled: boolean;
}

const ringOf = new WeakMap<File, RingFileCtx>();

/** anon_inode_getfile("[io_uring]", &io_uring_fops, ctx): a file whose release tears the ring down. */
export function ioUringGetFile(ctx: RingFileCtx, release: () => void): File {
  const fOp: FileOperations = { release: () => release() };
  const f: File = {
    path: "anon_inode:[io_uring]",
    flags: 2,
    canRead: true,
    canWrite: true,
    fOp,
    inode: { kind: "reg", size: () => 0n, dioOffsetAlign: 1, dioMemAlign: 1 },
    pos: 0n,
    refcount: 1,
  };
  ringOf.set(f, ctx);
  return f;
}

/** io_is_uring_fops(): the ring behind a file, or undefined for other files. */
export function ioUringCtxOf(f: File): RingFileCtx | undefined {
  return ringOf.get(f);
}

/** io_is_uring_fops() as a predicate. */
export function ioIsUringFops(f: File): boolean {
  return ringOf.has(f);
}
