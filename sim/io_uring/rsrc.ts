/**
 * Registered buffers (io_uring/rsrc.c): `io_mapped_ubuf` with one bio_vec per
 * pinned page, memlock accounting, register/update/unregister,
 * io_import_fixed(), and the proposal's premapping of registered buffers for
 * DMA on a fixed file (IORING_REGISTER_MAP_BUFFERS / UNMAP_BUFFERS).
 *
 * Lifetime: the table holds one reference on each buffer and each in-flight
 * request one more; pages are unpinned when the last goes. A DMA mapping
 * belongs to one buffer and one file slot; it is released (the driver's
 * dma_unmap) when unmapped, when its buffer leaves the table, or when its
 * file slot is emptied or replaced. When that happens while an I/O still
 * uses the tag depends on `Kernel.premap`: as posted (`"v2"`), UNMAP_BUFFERS
 * and file-slot removal release it at once (the I/O is left with a dead
 * tag), and only a buffer leaving the table waits for the last in-flight
 * user (the rsrc node's deferred put); `"hardened"` always waits.
 *
 * @module
 */

import type { BioVec, DmaTag } from "../block/bvec.ts";
import { type IovIter, iovIterBvec, iovIterDmaTag, type IterDir } from "../block/iov_iter.ts";
import type { File } from "../fs/file.ts";
import { fput, getFile } from "../fs/file.ts";
import type { UserMm } from "../memory/mm.ts";
import { type Page, PAGE_SIZE } from "../memory/phys.ts";
import { Errno } from "../uapi/errno.ts";
import { IORING_MAX_BUF_SIZE, IORING_MAX_REG_BUFFERS, IOSQE, IOVEC, O } from "../uapi/io_uring.ts";
import type { UserRange } from "../block/iov_iter.ts";
import type { PremapVariant } from "../kernel.ts";
import type { IoKiocb, IoRingCtx } from "./io_uring_types.ts";

const U64_MAX = (1n << 64n) - 1n;
const TWO_POW_32 = 1n << 32n;
/** Addresses above which adding a u32 length may pass U64_MAX. */
const ADD_OVERFLOW_FLOOR = U64_MAX - TWO_POW_32;

/** A premapping of one registered buffer on one fixed file slot (the proposal). */
export interface IoBufDma {
  /** The driver's tag. */
  readonly tag: DmaTag;
  /** The file whose dma_map made the tag (a reference is held). */
  readonly file: File;
  /** The fixed file slot it belongs to. */
  readonly slot: number;
  /** In-flight I/Os using the tag. */
  users: number;
  /** Detached from its buffer: dma_unmap runs when `users` reaches 0, unless already released. */
  detached: boolean;
  /** dma_unmap has run (the file reference is dropped); the tag is dead. */
  released: boolean;
}

/** struct io_mapped_ubuf */
export interface IoMappedUbuf {
  /** ubuf: user address of the first byte. */
  readonly ubuf: bigint;
  /** len in bytes. */
  readonly len: number;
  /** One bio_vec per page (non-huge pages are not coalesced). */
  readonly bvec: readonly BioVec[];
  /** The pinned frames, for unpinning. */
  readonly pages: readonly Page[];
  /** Pages charged to memlock. */
  readonly acctPages: number;
  /** References: the table's and in-flight requests' (the rsrc node's refs). */
  refs: number;
  /** node->tag: user_data of the CQE posted when the last reference goes (0: none). */
  tag: bigint;
  /** The proposal's DMA mapping, if mapped. */
  dma: IoBufDma | null;
}

/** Options for the buffer table. */
export interface BufTableOptions {
  /** capable(CAP_IPC_LOCK): skip memlock accounting (root). Default true. */
  capIpcLock?: boolean;
  /** RLIMIT_MEMLOCK in bytes when accounting applies. Default 8 MiB. */
  memlockLimitBytes?: number;
  /** Posts a tagged buffer's CQE when its node is freed (io_post_aux_cqe(ctx, tag, 0, 0)). */
  postTag?: (tag: bigint) => void;
}

/** io_buffer_validate(): 0, -EFAULT or -EOVERFLOW. A null base with length 0 is a sparse slot. */
export function ioBufferValidate(iov: UserRange): number {
  const acctLen = BigInt(iov.len) + BigInt(PAGE_SIZE - 1);
  if (iov.base === 0n) return iov.len ? -Errno.EFAULT : 0;
  if (!iov.len) return -Errno.EFAULT;
  if (iov.len > IORING_MAX_BUF_SIZE) return -Errno.EFAULT;
  if (iov.base + acctLen > U64_MAX) return -Errno.EOVERFLOW;
  return 0;
}

/** Decode `nr` struct iovec from bytes. */
export function decodeIovecs(b: Uint8Array, nr: number): UserRange[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: UserRange[] = [];
  for (let i = 0; i < nr; i++) {
    const len = v.getBigUint64(i * 16 + 8, true);
    out.push({
      base: v.getBigUint64(i * 16, true),
      len: len > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(len),
    });
  }
  return out;
}

/** The ring's registered buffer table (ctx->buf_table) and its memlock account. */
export class BufTable {
  #nodes: (IoMappedUbuf | null)[] = [];
  /**
   * ctx->dummy_ubuf: what a sparse slot holds for the proposal's MAP/UNMAP
   * (no pages, zero bvecs, never freed). {@link BufTable.get} still answers
   * null for a sparse slot, so fixed I/O on one stays -EFAULT.
   */
  readonly #dummy: IoMappedUbuf = {
    ubuf: 0n,
    len: 0,
    bvec: [],
    pages: [],
    acctPages: 0,
    refs: 1,
    tag: 0n,
    dma: null,
  };
  readonly #mm: UserMm;
  readonly #postTag: (tag: bigint) => void;
  readonly #capIpcLock: boolean;
  readonly #limitPages: number;
  #acctPages = 0;

  /** An empty table over address space `mm`. */
  constructor(mm: UserMm, opts: BufTableOptions = {}) {
    this.#mm = mm;
    this.#capIpcLock = opts.capIpcLock ?? true;
    this.#limitPages = Math.floor((opts.memlockLimitBytes ?? 8 << 20) / PAGE_SIZE);
    this.#postTag = opts.postTag ?? (() => {});
  }

  /** buf_table.nr */
  get nr(): number {
    return this.#nodes.length;
  }

  /** Pages currently charged to memlock (0 with CAP_IPC_LOCK). */
  get accountedPages(): number {
    return this.#acctPages;
  }

  /** io_rsrc_node_lookup(): the buffer at `index`, or null. */
  get(index: number): IoMappedUbuf | null {
    if (!Number.isInteger(index) || index < 0 || index >= this.#nodes.length) return null;
    return this.#nodes[index];
  }

  /**
   * `ctx->user_bufs[index]` as the proposal's MAP/UNMAP read it: the buffer,
   * the dummy buffer for a sparse slot, or null out of range.
   */
  mapTarget(index: number): IoMappedUbuf | null {
    if (!Number.isInteger(index) || index < 0 || index >= this.#nodes.length) return null;
    return this.#nodes[index] ?? this.#dummy;
  }

  /** io_sqe_buffer_register(): pin, account and describe one buffer; null for a sparse slot. */
  #bufferRegister(iov: UserRange): IoMappedUbuf | null | number {
    if (iov.base === 0n) return null;
    const pinned = this.#mm.pinUserPages(iov.base, iov.len);
    if (typeof pinned === "number") return pinned;
    const nrPages = pinned.pages.length;
    if (!this.#capIpcLock) {
      if (this.#acctPages + nrPages > this.#limitPages) {
        this.#mm.unpinUserPages(pinned.pages);
        return -Errno.ENOMEM;
      }
      this.#acctPages += nrPages;
    }
    const bvec: BioVec[] = [];
    let off = pinned.offset;
    let size = iov.len;
    for (const page of pinned.pages) {
      const vecLen = Math.min(size, PAGE_SIZE - off);
      bvec.push({ page, len: vecLen, offset: off });
      off = 0;
      size -= vecLen;
    }
    if (size !== 0) throw new Error("io_sqe_buffer_register: bvec does not cover the buffer");
    return {
      ubuf: iov.base,
      len: iov.len,
      bvec,
      pages: pinned.pages,
      acctPages: this.#capIpcLock ? 0 : nrPages,
      refs: 1,
      tag: 0n,
      dma: null,
    };
  }

  /**
   * io_sqe_buffers_register(): 0 or -errno (nothing stays registered on
   * failure, and no tag is posted). `tags` (null: none) gives each buffer's
   * tag; a tag on a sparse slot is -EINVAL.
   */
  register(
    iovs: readonly UserRange[] | null,
    nr: number,
    tags: readonly bigint[] | null = null,
  ): number {
    if (this.#nodes.length) return -Errno.EBUSY;
    if (!nr || nr > IORING_MAX_REG_BUFFERS) return -Errno.EINVAL;
    if (iovs && iovs.length < nr) return -Errno.EFAULT;
    this.#nodes = new Array(nr).fill(null);
    for (let i = 0; i < nr; i++) {
      const tag = tags ? tags[i] : 0n;
      let ret = 0;
      if (iovs) {
        ret = ioBufferValidate(iovs[i]);
        if (ret === 0) {
          const node = this.#bufferRegister(iovs[i]);
          if (typeof node === "number") ret = node;
          else this.#nodes[i] = node;
        }
      }
      if (!ret && tag) {
        const n = this.#nodes[i];
        if (!n) ret = -Errno.EINVAL;
        else n.tag = tag;
      }
      if (ret) {
        // io_clear_table_tags(), then unregister.
        for (const n of this.#nodes) if (n) n.tag = 0n;
        this.unregister();
        return ret;
      }
    }
    return 0;
  }

  /**
   * __io_sqe_buffers_update(): replace buffers from `offset`, each with its
   * tag (`tags`, null: none); count done, or -errno if none. A tag on a
   * sparse (NULL, 0) entry is -EINVAL. The replaced buffer posts its tag when
   * its last in-flight user is done.
   */
  update(
    offset: number,
    iovs: readonly UserRange[],
    tags: readonly bigint[] | null = null,
  ): number {
    if (!this.#nodes.length) return -Errno.ENXIO;
    if (offset + iovs.length > this.#nodes.length) return -Errno.EINVAL;
    let done = 0;
    let err = 0;
    for (; done < iovs.length; done++) {
      const tag = tags ? tags[done] : 0n;
      err = ioBufferValidate(iovs[done]);
      if (err) break;
      const node = this.#bufferRegister(iovs[done]);
      if (typeof node === "number") {
        err = node;
        break;
      }
      if (tag) {
        if (!node) {
          err = -Errno.EINVAL;
          break;
        }
        node.tag = tag;
      }
      this.#reset(offset + done);
      this.#nodes[offset + done] = node;
    }
    return done ? done : err;
  }

  /**
   * io_sqe_buffers_unregister(): 0, or -ENXIO when nothing is registered.
   * DMA mappings are undone in slot order; the nodes are put as
   * io_rsrc_data_free() puts them, last slot first.
   */
  unregister(): number {
    if (!this.#nodes.length) return -Errno.ENXIO;
    const nodes = this.#nodes;
    this.#nodes = [];
    for (const imu of nodes) if (imu?.dma) unmapBuf(imu, "deferred");
    for (let i = nodes.length - 1; i >= 0; i--) {
      const imu = nodes[i];
      if (imu) this.put(imu);
    }
    return 0;
  }

  /** io_reset_rsrc_node(): drop the table's reference, undoing any DMA mapping. */
  #reset(i: number): void {
    const imu = this.#nodes[i];
    if (!imu) return;
    this.#nodes[i] = null;
    // io_buffer_unmap() runs io_dma_unmap() when the rsrc node's last user is gone.
    if (imu.dma) unmapBuf(imu, "deferred");
    this.put(imu);
  }

  /** Take a request's reference. */
  get_(imu: IoMappedUbuf): void {
    if (imu.refs <= 0) throw new Error("io_mapped_ubuf: get after free");
    imu.refs++;
  }

  /** io_put_rsrc_node(): at the last reference, the tag CQE, then io_buffer_unmap(). */
  put(imu: IoMappedUbuf): void {
    if (imu.refs <= 0) throw new Error("io_mapped_ubuf: refcount underflow");
    if (--imu.refs > 0) return;
    if (imu.dma) throw new Error("io_mapped_ubuf: freed while DMA-mapped");
    if (imu.tag) this.#postTag(imu.tag);
    this.#mm.unpinUserPages(imu.pages);
    this.#acctPages -= imu.acctPages;
    if (this.#acctPages < 0) throw new Error("memlock account underflow");
  }

  /** Indices of buffers (the dummy for sparse slots) mapped on `slot`. */
  mappedOn(slot: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.#nodes.length; i++) {
      if (this.mapTarget(i)?.dma?.slot === slot) out.push(i);
    }
    return out;
  }
}

/** The driver's dma_unmap and the file reference, once. */
function releaseDma(d: IoBufDma): void {
  if (d.released) throw new Error("dma tag: released twice");
  d.released = true;
  d.file.fOp.dmaUnmap?.(d.file, d.tag);
  fput(d.file);
}

/**
 * When an unmap releases the mapping: `"now"` even with I/O in flight (the
 * posted io_dma_unmap() from UNMAP_BUFFERS and io_dma_unmap_file()), or
 * `"deferred"` until the last in-flight user completes.
 */
export type UnmapWhen = "now" | "deferred";

/** When UNMAP_BUFFERS and file-slot removal release a mapping under `premap`. */
export function unmapWhen(premap: PremapVariant): UnmapWhen {
  return premap === "hardened" ? "deferred" : "now";
}

/** io_dma_unmap() (the proposal): detach a buffer's DMA mapping and release it `when`. */
export function unmapBuf(imu: IoMappedUbuf, when: UnmapWhen): void {
  const d = imu.dma;
  if (!d) return;
  imu.dma = null;
  d.detached = true;
  if (when === "now" || d.users === 0) releaseDma(d);
}

/** Drop an in-flight I/O's use of a tag; a detached mapping not yet released goes at the last. */
export function putDmaUser(d: IoBufDma): void {
  if (d.users <= 0) throw new Error("dma tag: user count underflow");
  d.users--;
  if (d.detached && !d.released && d.users === 0) releaseDma(d);
}

/**
 * io_dma_unmap_file() (the proposal): a fixed file slot is being emptied or
 * replaced (update, unregister, ring teardown), so every buffer mapped on it
 * is unmapped, `when` as {@link unmapWhen} says.
 */
export function ioFileSlotRelease(bufs: BufTable, slot: number, when: UnmapWhen): void {
  for (const i of bufs.mappedOn(slot)) unmapBuf(bufs.mapTarget(i)!, when);
}

/** Parsed struct io_uring_map_buffers. */
export interface MapBuffersArg {
  /** Fixed file index. */
  fd: number;
  /** First buffer. */
  bufStart: number;
  /** One past the last buffer (clamped). */
  bufEnd: number;
}

/**
 * The proposal's argument checks, in order: nonzero flags/rsvd, fd range,
 * buf_start range, buf_end clamp, empty range. Returns the range or -EINVAL.
 */
export function ioMapBuffersCheck(
  arg: Uint8Array,
  nrUserFiles: number,
  nrUserBufs: number,
): MapBuffersArg | number {
  const v = new DataView(arg.buffer, arg.byteOffset, 32);
  const fd = v.getInt32(0, true);
  const bufStart = v.getInt32(4, true);
  let bufEnd = v.getInt32(8, true);
  const flags = v.getUint32(12, true);
  if (flags || v.getBigUint64(16, true) || v.getBigUint64(24, true)) return -Errno.EINVAL;
  if (fd < 0 || fd >= nrUserFiles) return -Errno.EINVAL;
  if (bufStart < 0 || bufStart >= nrUserBufs) return -Errno.EINVAL;
  if (bufEnd > nrUserBufs) bufEnd = nrUserBufs;
  if (bufEnd <= bufStart) return -Errno.EINVAL;
  return { fd, bufStart, bufEnd };
}

/**
 * io_register_map_buffers() (the proposal): premap buffers `[bufStart, bufEnd)`
 * on the file in slot `fd`. On any failure, what this call mapped is unmapped.
 */
export function ioMapBuffers(bufs: BufTable, file: File | null, a: MapBuffersArg): number {
  if (!file) return -Errno.EBADF;
  if (!(file.flags & O.DIRECT)) return -Errno.EOPNOTSUPP;
  const done: IoMappedUbuf[] = [];
  let err = 0;
  for (let i = a.bufStart; i < a.bufEnd; i++) {
    // A sparse slot is the dummy buffer: zero bvecs go to the driver, which decides.
    const imu = bufs.mapTarget(i)!;
    if (imu.dma) {
      err = -Errno.EBUSY;
      break;
    }
    if (!file.fOp.dmaMap) {
      err = -Errno.EINVAL;
      break;
    }
    const tag = file.fOp.dmaMap(file, imu.bvec);
    if (typeof tag === "number") {
      err = tag < 0 ? tag : -Errno.EINVAL;
      break;
    }
    imu.dma = {
      tag,
      file: getFile(file),
      slot: a.fd,
      users: 0,
      detached: false,
      released: false,
    };
    done.push(imu);
  }
  // No I/O can use a tag this call made: release at once, in reverse.
  if (err) { for (let k = done.length - 1; k >= 0; k--) unmapBuf(done[k], "now"); }
  return err;
}

/**
 * io_register_unmap_buffers() (the proposal): unmap every mapped buffer in
 * `[bufStart, bufEnd)`, whichever slot it was mapped on. `fd` was only
 * range-checked (get_map_range); the slot itself is never looked at. Each
 * mapping is released `when` as {@link unmapWhen} says.
 */
export function ioUnmapBuffers(bufs: BufTable, a: MapBuffersArg, when: UnmapWhen): number {
  for (let i = a.bufStart; i < a.bufEnd; i++) {
    const imu = bufs.mapTarget(i)!;
    if (imu.dma) unmapBuf(imu, when);
  }
  return 0;
}

/** What io_import_fixed() hands the read/write path. */
export interface FixedImport {
  /** The iterator: bvec, or dma tag when premapped for this file. */
  iter: IovIter | null;
  /** The buffer (a reference is taken for the request). */
  imu: IoMappedUbuf | null;
  /** The mapping whose tag the iterator carries (a user is counted), if any. */
  dma: IoBufDma | null;
}

/**
 * io_import_fixed(): an iterator over `[addr, addr+len)` of buffer `bufIndex`
 * into `out` (with the buffer, referenced, and the premapping in use), or
 * -EFAULT when the index or the range is bad (`out` is then untouched).
 * With the proposal, a dma-tag iterator when the buffer is mapped on `file`.
 * Returns 0 or -EFAULT.
 */
export function ioImportFixed(
  bufs: BufTable,
  dir: IterDir,
  bufIndex: number,
  addr: bigint,
  len: number,
  file: File,
  out: FixedImport,
): number {
  if (bufIndex >= bufs.nr) return -Errno.EFAULT;
  const imu = bufs.get(bufIndex);
  if (!imu) return -Errno.EFAULT;
  // check_add_overflow(buf_addr, len): a len below 2^32 can carry past 2^64 only from an
  // address above 2^64 - 2^32, so only such an address needs the (allocating) sum.
  if (addr > ADD_OVERFLOW_FLOOR && addr + BigInt(len) > U64_MAX) return -Errno.EFAULT;
  // [addr, addr + len) within [ubuf, ubuf + imu.len), checked on the offset into the buffer:
  // one BigInt subtraction, then numbers (imu.len is at most IORING_MAX_BUF_SIZE, so an
  // offset of 2^32 or more is out of range whatever len is).
  const rel = addr - imu.ubuf;
  if (rel < 0n || rel >= TWO_POW_32) return -Errno.EFAULT;
  const offset = Number(rel);
  if (offset + len > imu.len) return -Errno.EFAULT;
  bufs.get_(imu);
  const d = imu.dma;
  out.imu = imu;
  if (d && d.file === file) {
    d.users++;
    out.iter = iovIterDmaTag(dir, d.tag, offset, len);
    out.dma = d;
    return 0;
  }
  // iov_iter_bvec(imu->bvec, offset + len) then iov_iter_advance(offset), as the kernel.
  out.iter = iovIterBvec(dir, imu.bvec, len, offset);
  out.dma = null;
  return 0;
}

export function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Read `nr` s32 from user memory at `addr`; -EFAULT on a fault. */
export function copyFds(ctx: IoRingCtx, addr: bigint, nr: number): number[] | number {
  const raw = ctx.kernel.mm.copyFromUser(addr, 4 * nr);
  if (typeof raw === "number") return raw;
  const v = view(raw);
  return Array.from({ length: nr }, (_, i) => v.getInt32(4 * i, true));
}

/** Read `nr` struct iovec from user memory at `addr`; -EFAULT on a fault. */
export function copyIovecs(ctx: IoRingCtx, addr: bigint, nr: number): UserRange[] | number {
  const raw = ctx.kernel.mm.copyFromUser(addr, IOVEC.SIZE * nr);
  if (typeof raw === "number") return raw;
  return decodeIovecs(raw, nr);
}

/** Read `nr` u64 tags from user memory at `addr` (null for a NULL pointer); -EFAULT on a fault. */
export function copyTags(ctx: IoRingCtx, addr: bigint, nr: number): bigint[] | null | number {
  if (!addr) return null;
  const raw = ctx.kernel.mm.copyFromUser(addr, 8 * nr);
  if (typeof raw === "number") return raw;
  const v = view(raw);
  return Array.from({ length: nr }, (_, i) => v.getBigUint64(8 * i, true));
}

/** __io_register_rsrc_update(): replace `nr` file slots or buffers from `offset`. */
export function ioRegisterRsrcUpdate(
  ctx: IoRingCtx,
  type: "file" | "buffer",
  offset: number,
  data: bigint,
  tags: bigint,
  nr: number,
): number {
  if (offset + nr > 0xffffffff) return -Errno.EOVERFLOW;
  if (type === "file") {
    if (!ctx.fileTable.nr) return -Errno.ENXIO;
    if (offset + nr > ctx.fileTable.nr) return -Errno.EINVAL;
    const tagArr = copyTags(ctx, tags, nr);
    if (typeof tagArr === "number") return tagArr;
    const fds = copyFds(ctx, data, nr);
    if (typeof fds === "number") return fds;
    return ctx.fileTable.update(ctx.fdt, offset, fds, tagArr);
  }
  if (!ctx.bufTable.nr) return -Errno.ENXIO;
  if (offset + nr > ctx.bufTable.nr) return -Errno.EINVAL;
  const iovs = copyIovecs(ctx, data, nr);
  if (typeof iovs === "number") return iovs;
  const tagArr = copyTags(ctx, tags, nr);
  if (typeof tagArr === "number") return tagArr;
  return ctx.bufTable.update(offset, iovs, tagArr);
}

interface IoRsrcUpdate {
  offset: number;
  nrArgs: number;
  arg: bigint;
}

/** IORING_FILE_INDEX_ALLOC as an update offset: install each file in a free slot. */
const IORING_FILE_INDEX_ALLOC = 0xffffffff;

/** io_files_update_prep(): IORING_OP_FILES_UPDATE. */
export function ioFilesUpdatePrep(req: IoKiocb): number {
  if (req.flags & (IOSQE.FIXED_FILE | IOSQE.BUFFER_SELECT)) return -Errno.EINVAL;
  if (req.sqe.rwFlags || req.sqe.fileIndex) return -Errno.EINVAL;
  const up: IoRsrcUpdate = {
    offset: Number(req.sqe.off & 0xffffffffn),
    nrArgs: req.sqe.len,
    arg: req.sqe.addr,
  };
  if (!up.nrArgs) return -Errno.EINVAL;
  req.op = up;
  return 0;
}

/** io_files_update_with_index_alloc(): each fd to a free slot, the slot written back. */
function filesUpdateWithIndexAlloc(req: IoKiocb, up: IoRsrcUpdate): number {
  const ctx = req.ctx;
  if (!ctx.fileTable.nr) return -Errno.ENXIO;
  const mm = ctx.kernel.mm;
  let done = 0;
  let ret = 0;
  for (; done < up.nrArgs; done++) {
    const at = up.arg + BigInt(4 * done);
    const raw = mm.copyFromUser(at, 4);
    if (typeof raw === "number") {
      ret = -Errno.EFAULT;
      break;
    }
    const f = ctx.fdt.fget(view(raw).getInt32(0, true));
    if (!f) {
      ret = -Errno.EBADF;
      break;
    }
    ret = ctx.fileTable.installFixed(f, IORING_FILE_INDEX_ALLOC);
    if (ret < 0) {
      fput(f);
      break;
    }
    const out = new Uint8Array(4);
    view(out).setInt32(0, ret, true);
    if (mm.copyToUser(at, out) < 0) {
      ctx.fileTable.releaseSlot(ret); // __io_close_fixed()
      ret = -Errno.EFAULT;
      break;
    }
  }
  return done ? done : ret;
}

/** io_files_update(): IORING_OP_FILES_UPDATE, the register call's update as an SQE. */
export function ioFilesUpdate(req: IoKiocb): number {
  const up = req.op as IoRsrcUpdate;
  if (up.offset === IORING_FILE_INDEX_ALLOC) return filesUpdateWithIndexAlloc(req, up);
  return ioRegisterRsrcUpdate(req.ctx, "file", up.offset, up.arg, 0n, up.nrArgs);
}
