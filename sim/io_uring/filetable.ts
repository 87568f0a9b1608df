/**
 * Fixed files (io_uring/filetable.c, io_uring/rsrc.c io_sqe_files_register,
 * __io_sqe_files_update, io_sqe_files_unregister): a table of file slots,
 * possibly sparse, each holding one file reference.
 *
 * The proposal ties a DMA mapping to a file slot, so every way a slot loses
 * its file (update, unregister, ring teardown) goes through
 * {@link FileTable.releaseSlot}, which first calls the release hook the ring
 * gives it (the proposal's slot release helper: unmap what is mapped there).
 *
 * @module
 */

import { fput } from "../fs/file.ts";
import type { File } from "../fs/file.ts";
import type { FdTable } from "../fs/fdtable.ts";
import { Errno } from "../uapi/errno.ts";
import { IORING_MAX_FIXED_FILES } from "../uapi/io_uring.ts";

export { IORING_MAX_FIXED_FILES };
/** IORING_REGISTER_FILES_SKIP: leave a slot unchanged in an update. */
export const IORING_REGISTER_FILES_SKIP = -2;

/** Called before a slot's file is dropped (the proposal's io_file_slot_release hook). */
export type SlotReleaseHook = (slot: number, file: File) => void;

/** The ring's fixed file table (ctx->file_table). */
export class FileTable {
  #slots: (File | null)[] = [];
  readonly #onRelease: SlotReleaseHook;
  /** Predicate for io_is_uring_fops(): ring files cannot be registered. */
  readonly #isRingFile: (f: File) => boolean;

  /** A table with no slots; `onRelease` runs before any slot's file is put. */
  constructor(onRelease: SlotReleaseHook, isRingFile: (f: File) => boolean) {
    this.#onRelease = onRelease;
    this.#isRingFile = isRingFile;
  }

  /** ctx->file_table.data.nr: number of slots (0 when nothing is registered). */
  get nr(): number {
    return this.#slots.length;
  }

  /** io_file_from_index(): the file in `slot`, or null (empty or out of range). */
  get(slot: number): File | null {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.#slots.length) return null;
    return this.#slots[slot];
  }

  /** io_sqe_files_register(): `fds` (-1 = sparse) from the process table; 0 or -errno. */
  register(fdt: FdTable, fds: readonly number[] | null, nr: number): number {
    if (this.#slots.length) return -Errno.EBUSY;
    if (!nr) return -Errno.EINVAL;
    if (nr > IORING_MAX_FIXED_FILES) return -Errno.EMFILE;
    if (nr > fdt.maxFds) return -Errno.EMFILE;
    this.#slots = new Array(nr).fill(null);
    for (let i = 0; i < nr; i++) {
      const fd = fds ? fds[i] : -1;
      if (fd === -1) continue;
      const f = fdt.fget(fd);
      if (!f) return this.#failRegister(-Errno.EBADF);
      if (this.#isRingFile(f)) {
        fput(f);
        return this.#failRegister(-Errno.EBADF);
      }
      this.#slots[i] = f;
    }
    return 0;
  }

  #failRegister(err: number): number {
    this.unregister();
    return err;
  }

  /** __io_sqe_files_update(): replace slots from `offset`; count done, or -errno if none. */
  update(fdt: FdTable, offset: number, fds: readonly number[]): number {
    if (!this.#slots.length) return -Errno.ENXIO;
    if (offset + fds.length > this.#slots.length) return -Errno.EINVAL;
    let done = 0;
    let err = 0;
    for (; done < fds.length; done++) {
      const fd = fds[done];
      if (fd === IORING_REGISTER_FILES_SKIP) continue;
      const i = offset + done;
      this.releaseSlot(i);
      if (fd !== -1) {
        const f = fdt.fget(fd);
        if (!f) {
          err = -Errno.EBADF;
          break;
        }
        if (this.#isRingFile(f)) {
          fput(f);
          err = -Errno.EBADF;
          break;
        }
        this.#slots[i] = f;
      }
    }
    return done ? done : err;
  }

  /**
   * __io_fixed_fd_install(): put `file` (its reference is taken over on
   * success) in 1-based slot `fileSlot`, or the lowest free slot for
   * IORING_FILE_INDEX_ALLOC. Returns 0 (or the allocated slot) or -errno.
   */
  installFixed(file: File, fileSlot: number): number {
    const alloc = fileSlot === 0xffffffff;
    let slot: number;
    if (alloc) {
      slot = this.#slots.indexOf(null);
      if (slot < 0) return -Errno.ENFILE;
    } else {
      slot = (fileSlot - 1) >>> 0;
    }
    if (this.#isRingFile(file)) return -Errno.EBADF;
    if (!this.#slots.length) return -Errno.ENXIO;
    if (slot >= this.#slots.length) return -Errno.EINVAL;
    this.releaseSlot(slot);
    this.#slots[slot] = file;
    return alloc ? slot : 0;
  }

  /** io_reset_rsrc_node() for a file slot: run the release hook, then drop the file. */
  releaseSlot(slot: number): void {
    const f = this.#slots[slot];
    if (!f) return;
    this.#onRelease(slot, f);
    this.#slots[slot] = null;
    fput(f);
  }

  /** io_sqe_files_unregister(): 0, or -ENXIO when nothing is registered. */
  unregister(): number {
    if (!this.#slots.length) return -Errno.ENXIO;
    for (let i = 0; i < this.#slots.length; i++) this.releaseSlot(i);
    this.#slots = [];
    return 0;
  }
}
