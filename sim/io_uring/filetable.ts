/**
 * Fixed files (io_uring/filetable.c, io_uring/rsrc.c io_sqe_files_register,
 * __io_sqe_files_update, io_sqe_files_unregister): a table of file slots,
 * possibly sparse, each an rsrc node holding one file reference and a tag.
 * A request on a fixed file holds the node until it is freed; the last
 * reference posts the tag's CQE (a nonzero tag only) and drops the file.
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
import type { RsrcNodeRef } from "./io_uring_types.ts";
import { Errno } from "../uapi/errno.ts";
import { IORING_MAX_FIXED_FILES } from "../uapi/io_uring.ts";

export { IORING_MAX_FIXED_FILES };
/** IORING_REGISTER_FILES_SKIP: leave a slot unchanged in an update. */
export const IORING_REGISTER_FILES_SKIP = -2;

/** Called before a slot's file is dropped (the proposal's io_file_slot_release hook). */
export type SlotReleaseHook = (slot: number, file: File) => void;

/** Posts a resource tag's CQE (io_post_aux_cqe(ctx, tag, 0, 0)). */
export type PostTag = (tag: bigint) => void;

/**
 * struct io_rsrc_node of a file slot: the file, its tag, and references
 * (the table's and each request's that uses the slot). The last reference
 * posts the tag CQE (a nonzero tag only) and drops the file.
 */
export interface FileNode {
  /** The file (the node holds one reference). */
  readonly file: File;
  /** node->tag: user_data of the CQE posted when the node is freed (0: none). */
  tag: bigint;
  /** References: the table's and in-flight requests'. */
  refs: number;
  /** Take a request's reference (io_file_get_fixed()); put it when the request is freed. */
  ref(): RsrcNodeRef;
}

/** A request's reference on a file node: put once. */
class FileNodeRef implements RsrcNodeRef {
  #put: (() => void) | null;

  constructor(put: () => void) {
    this.#put = put;
  }

  put(): void {
    const put = this.#put;
    if (!put) throw new Error("io_rsrc_node: request reference put twice");
    this.#put = null;
    put();
  }
}

/** The ring's fixed file table (ctx->file_table). */
export class FileTable {
  #slots: (FileNode | null)[] = [];
  readonly #onRelease: SlotReleaseHook;
  /** Predicate for io_is_uring_fops(): ring files cannot be registered. */
  readonly #isRingFile: (f: File) => boolean;
  readonly #postTag: PostTag;
  /** table->alloc_hint: where the next IORING_FILE_INDEX_ALLOC search starts. */
  #allocHint = 0;

  /**
   * A table with no slots; `onRelease` runs before any slot's file is put,
   * `postTag` posts a tagged node's CQE when its last reference goes.
   */
  constructor(
    onRelease: SlotReleaseHook,
    isRingFile: (f: File) => boolean,
    postTag: PostTag = () => {},
  ) {
    this.#onRelease = onRelease;
    this.#isRingFile = isRingFile;
    this.#postTag = postTag;
  }

  /** ctx->file_table.data.nr: number of slots (0 when nothing is registered). */
  get nr(): number {
    return this.#slots.length;
  }

  /** io_file_from_index(): the file in `slot`, or null (empty or out of range). */
  get(slot: number): File | null {
    return this.getNode(slot)?.file ?? null;
  }

  /** io_rsrc_node_lookup(): the node in `slot`, or null. */
  getNode(slot: number): FileNode | null {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.#slots.length) return null;
    return this.#slots[slot];
  }

  /** io_rsrc_node_alloc() + io_fixed_file_set(): a node taking over `file`'s reference. */
  #node(file: File, tag: bigint): FileNode {
    const put = () => this.#put(node);
    const node: FileNode = {
      file,
      tag,
      refs: 1,
      ref: () => {
        if (node.refs <= 0) throw new Error("io_rsrc_node: get after free");
        node.refs++;
        return new FileNodeRef(put);
      },
    };
    return node;
  }

  /** io_put_rsrc_node() / io_free_rsrc_node(): the tag CQE, then the file. */
  #put(node: FileNode): void {
    if (node.refs <= 0) throw new Error("io_rsrc_node: refcount underflow");
    if (--node.refs > 0) return;
    if (node.tag) this.#postTag(node.tag);
    fput(node.file);
  }

  /**
   * io_sqe_files_register(): `fds` (-1 = sparse; null: all sparse) from the
   * process table, each slot with its tag (`tags`, null: none); 0 or -errno.
   * A tag on a sparse slot is -EINVAL; on failure no tag is posted.
   */
  register(
    fdt: FdTable,
    fds: readonly number[] | null,
    nr: number,
    tags: readonly bigint[] | null = null,
  ): number {
    if (this.#slots.length) return -Errno.EBUSY;
    if (!nr) return -Errno.EINVAL;
    if (nr > IORING_MAX_FIXED_FILES) return -Errno.EMFILE;
    if (nr > fdt.maxFds) return -Errno.EMFILE;
    this.#slots = new Array(nr).fill(null);
    // io_file_table_set_alloc_range(ctx, 0, nr) at the end of a registration.
    this.#allocHint = 0;
    for (let i = 0; i < nr; i++) {
      const tag = tags ? tags[i] : 0n;
      const fd = fds ? fds[i] : -1;
      if (fd === -1) {
        if (tag) return this.#failRegister(-Errno.EINVAL);
        continue;
      }
      const f = fdt.fget(fd);
      if (!f) return this.#failRegister(-Errno.EBADF);
      if (this.#isRingFile(f)) {
        fput(f);
        return this.#failRegister(-Errno.EBADF);
      }
      this.#slots[i] = this.#node(f, tag);
    }
    return 0;
  }

  /** The fail path of io_sqe_files_register(): io_clear_table_tags(), then unregister. */
  #failRegister(err: number): number {
    for (const n of this.#slots) if (n) n.tag = 0n;
    this.unregister();
    return err;
  }

  /**
   * __io_sqe_files_update(): replace slots from `offset`, each new file with
   * its tag; count done, or -errno if none. Removing (-1) or skipping with a
   * tag is -EINVAL. The replaced node posts its tag when its last user goes.
   */
  update(
    fdt: FdTable,
    offset: number,
    fds: readonly number[],
    tags: readonly bigint[] | null = null,
  ): number {
    if (!this.#slots.length) return -Errno.ENXIO;
    if (offset + fds.length > this.#slots.length) return -Errno.EINVAL;
    let done = 0;
    let err = 0;
    for (; done < fds.length; done++) {
      const fd = fds[done];
      const tag = tags ? tags[done] : 0n;
      if ((fd === IORING_REGISTER_FILES_SKIP || fd === -1) && tag) {
        err = -Errno.EINVAL;
        break;
      }
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
        this.#slots[i] = this.#node(f, tag);
        this.#allocHint = i + 1; // io_file_bitmap_set()
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
      slot = this.#bitmapGet();
      if (slot < 0) return -Errno.ENFILE;
    } else {
      slot = (fileSlot - 1) >>> 0;
    }
    if (this.#isRingFile(file)) return -Errno.EBADF;
    if (!this.#slots.length) return -Errno.ENXIO;
    if (slot >= this.#slots.length) return -Errno.EINVAL;
    this.releaseSlot(slot);
    this.#slots[slot] = this.#node(file, 0n);
    this.#allocHint = slot + 1;
    return alloc ? slot : 0;
  }

  /**
   * io_file_bitmap_get(): the first free slot from the hint to the end, then
   * from the start to the hint; -ENFILE when the table is full.
   */
  #bitmapGet(): number {
    const n = this.#slots.length;
    if (!n) return -Errno.ENFILE;
    for (let i = Math.min(this.#allocHint, n); i < n; i++) if (!this.#slots[i]) return i;
    for (let i = 0; i < Math.min(this.#allocHint, n); i++) if (!this.#slots[i]) return i;
    return -Errno.ENFILE;
  }

  /** io_reset_rsrc_node() for a file slot: run the release hook, then drop the table's reference. */
  releaseSlot(slot: number): boolean {
    const n = this.#slots[slot];
    if (!n) return false;
    this.#onRelease(slot, n.file);
    this.#slots[slot] = null;
    this.#allocHint = slot; // io_file_bitmap_clear()
    this.#put(n);
    return true;
  }

  /**
   * io_sqe_files_unregister(): 0, or -ENXIO when nothing is registered. The
   * release hook runs for each slot in order; the nodes are put as
   * io_rsrc_data_free() puts them, last slot first (so tag CQEs come in
   * reverse slot order).
   */
  unregister(): number {
    if (!this.#slots.length) return -Errno.ENXIO;
    const slots = this.#slots;
    for (let i = 0; i < slots.length; i++) {
      const n = slots[i];
      if (n) this.#onRelease(i, n.file);
    }
    this.#slots = [];
    for (let i = slots.length - 1; i >= 0; i--) {
      const n = slots[i];
      if (n) this.#put(n);
    }
    return 0;
  }
}
