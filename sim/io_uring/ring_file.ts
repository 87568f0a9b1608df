/**
 * The ring's `struct file` (io_uring/io_uring.c io_uring_fops): ring
 * descriptors live in the process fd table like any file, the ring context
 * rides in the file's private_data, and io_is_uring_fops() tells a ring file
 * from others by its f_op.
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

/** A ring file's private_data: its context and what tears the ring down. */
interface RingFilePrivate {
  readonly ctx: RingFileCtx;
  readonly release: () => void;
}

/** io_uring_fops: one shared, immutable table, so a ring file is known by its f_op. */
const ioUringFops: FileOperations = Object.freeze({
  release: (f: File) => (f.privateData as RingFilePrivate).release(),
});

/** anon_inode_getfile("[io_uring]", &io_uring_fops, ctx): a file whose release tears the ring down. */
export function ioUringGetFile(ctx: RingFileCtx, release: () => void): File {
  const privateData: RingFilePrivate = { ctx, release };
  return {
    path: "anon_inode:[io_uring]",
    flags: 2,
    canRead: true,
    canWrite: true,
    fOp: ioUringFops,
    inode: { kind: "reg", size: () => 0n, dioOffsetAlign: 1, dioMemAlign: 1 },
    pos: 0n,
    refcount: 1,
    privateData,
  };
}

/** io_is_uring_fops(): the ring behind a file, or undefined for other files. */
export function ioUringCtxOf(f: File): RingFileCtx | undefined {
  return ioIsUringFops(f) ? (f.privateData as RingFilePrivate).ctx : undefined;
}

/** io_is_uring_fops() as a predicate: `file->f_op == &io_uring_fops`. */
export function ioIsUringFops(f: File): boolean {
  return f.fOp === ioUringFops;
}
