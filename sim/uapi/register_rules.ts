/**
 * The register guard both backends apply before an io_uring_register(2)
 * call: an allow-list of register opcodes, each with the memory the kernel
 * reaches for a given `nr_args`, and {@link registerGuard}, which answers a
 * call that breaks a rule without a system call.
 *
 * Why: on the `real` backend `arg` goes to the live kernel as a raw pointer,
 * and the kernel trusts `nr_args` for its size. `IORING_REGISTER_PROBE` with
 * a 16-byte argument and `nr_args` 64 made the kernel write ~500 bytes past
 * it into the Deno process. Pointers inside an argument (an fd array, an
 * iovec array, the buffers an iovec names, which the kernel pins and later
 * DMAs into) reach further. The guard lets a call through only when every
 * byte the kernel may read or write lies in the argument itself or in memory
 * the testbed handed out ({@link UserMemory}). The `sim` backend applies the
 * same guard, so both give the same answer for the same call.
 *
 * Order, each returning the first error, before anything else happens:
 * 1. `opcode` and `nr_args` not integers in [0, 2^32) -> `-EINVAL`;
 * 2. `IORING_REGISTER_USE_REGISTERED_RING` (bit 31) set -> `-EINVAL`: the
 *    testbed registers no ring fds (the mirror has no REGISTER_RING_FDS, so it
 *    is not on the list), so the registered-ring slot it names cannot hold
 *    this ring; the kernel answers `-EINVAL` for a task without a
 *    registered-ring table or an index >= {@link IO_RINGFD_REG_MAX}, and the
 *    call is never sent: with a ring registered at that index by someone else,
 *    the kernel would apply `arg` to that ring;
 * 3. opcode not on the list -> `-EINVAL`;
 * 4. a NULL (or zero-length) `arg` goes on: the kernel never dereferences
 *    anything but `arg` itself, and answers NULL with its own errno;
 * 5. `arg` shorter than {@link RegisterRule.argBytes} -> `-EFAULT`;
 * 6. a pointer inside `arg` (or inside memory it points to) whose bytes do
 *    not all lie in handed-out memory -> `-EFAULT`.
 *
 * Where the kernel rejects `nr_args` or the argument's fields before it
 * touches memory (a check that depends only on the call, not on ring state),
 * the rule asks for no memory, so the kernel's errno still wins there. Checks
 * that depend on ring state (`-EBUSY`, `-ENXIO`) run after the guard.
 *
 * @example
 * ```ts
 * import { registerGuard } from "./register_rules.ts";
 * import { IORING_REGISTER } from "./io_uring.ts";
 * const nothing = { covers: () => false, read: () => null };
 * // PROBE with room for 0 ops but nr_args 64: -EFAULT (14), nothing is called.
 * console.log(registerGuard(IORING_REGISTER.REGISTER_PROBE, new Uint8Array(16), 64, nothing)); // -14
 * ```
 *
 * @module
 */

import { Errno } from "./errno.ts";
import {
  IO_RINGFD_REG_MAX,
  IORING_MAX_BUF_SIZE,
  IORING_MAX_FIXED_FILES,
  IORING_MAX_REG_BUFFERS,
  IORING_REGISTER,
  IORING_REGISTER_USE_REGISTERED_RING,
  IORING_RSRC_REGISTER_SPARSE,
  IOVEC,
  MAP_BUFFERS,
  PROBE,
  RSRC_REGISTER,
  RSRC_UPDATE,
  RSRC_UPDATE2,
} from "./io_uring.ts";

export { IO_RINGFD_REG_MAX };

/** Memory a testbed handed out (its `allocBuffer`s): the only memory a register call may reach. */
export interface UserMemory {
  /** True when every byte of `[addr, addr + len)` lies in handed-out memory (`len` 0: true). */
  covers(addr: bigint, len: bigint): boolean;
  /** A copy of `[addr, addr + len)` when it lies in handed-out memory, else null. */
  read(addr: bigint, len: number): Uint8Array | null;
}

/** How the kernel uses the bytes at `arg`. */
export type ArgAccess = "none" | "read" | "read-write";

/** Memory the kernel reaches through a pointer inside the argument. */
export interface ArgPointer {
  /** The field it came from, e.g. `"rsrc_update2.data"`, `"iovec[3]"`. */
  field: string;
  /** User address. */
  addr: bigint;
  /** Bytes the kernel reads (or pins, for an iovec's buffer). */
  bytes: bigint;
  /** When set, the bytes are an array of this many struct iovec whose buffers are pinned too. */
  iovecs?: number;
}

/** One allow-listed register opcode and its memory rule. */
export interface RegisterRule {
  /** The uAPI name, e.g. `"IORING_REGISTER_PROBE"`. */
  name: string;
  /** Opcode number. */
  opcode: number;
  /** What the kernel does with the bytes at `arg`. */
  access: ArgAccess;
  /**
   * Bytes the kernel reads (and, for `"read-write"`, writes back) at `arg`
   * for this `nr_args`; 0 when it rejects `nr_args` without touching `arg`.
   */
  argBytes(nrArgs: number, nofile?: number): number;
  /** Memory reached through pointers inside an `arg` at least {@link argBytes} long. */
  pointers(arg: DataView, nrArgs: number, nofile?: number): ArgPointer[];
  /** Only the testbed implements it: never sent to a live kernel. */
  testbedOnly: boolean;
  /** The rule in words (README, test names). */
  summary: string;
}

const U32_LIMIT = 2 ** 32;
const U64_LIMIT = 1n << 64n;
/** PAGE_SIZE - 1 of the x86_64 hosts the testbed runs on (PAGE_ALIGN in io_buffer_validate). */
const PAGE_MASK = 4095n;

/** Bytes `nr` entries of `size` take when `1 <= nr <= max` (the kernel's own bound), else 0. */
function arrayBytes(nr: number, size: number, max: number): number {
  return nr >= 1 && nr <= max ? nr * size : 0;
}

/**
 * The buffers the kernel pins for an iovec array held in `v` (the argument or
 * a copy of user memory), in its order: it stops at the first entry
 * io_buffer_validate() rejects without touching memory (`(p, 0)`, `(NULL, n)`,
 * more than 1 GiB: -EFAULT; end past 2^64: -EOVERFLOW), as the kernel stops
 * there, so that entry's errno (or an update's count so far) stays the
 * kernel's. `(NULL, 0)` is a sparse slot, skipped.
 */
function iovecPointers(v: DataView, nr: number, field: string): ArgPointer[] {
  const out: ArgPointer[] = [];
  for (let i = 0; i < nr; i++) {
    const addr = v.getBigUint64(i * IOVEC.SIZE + IOVEC.base, true);
    const bytes = v.getBigUint64(i * IOVEC.SIZE + IOVEC.len, true);
    if (addr === 0n && bytes === 0n) continue;
    if (addr === 0n || bytes === 0n || bytes > BigInt(IORING_MAX_BUF_SIZE)) break;
    if (addr + ((bytes + PAGE_MASK) & ~PAGE_MASK) >= U64_LIMIT) break;
    out.push({ field: `${field}[${i}]`, addr, bytes });
  }
  return out;
}

/** data/tags of io_sqe_files_register() / io_sqe_buffers_register() via io_uring_rsrc_register. */
function rsrcRegisterPointers(kind: "file" | "buffer") {
  return (v: DataView, _nr: number, nofile = Infinity): ArgPointer[] => {
    const nr = v.getUint32(RSRC_REGISTER.nr, true);
    const flags = v.getUint32(RSRC_REGISTER.flags, true);
    const data = v.getBigUint64(RSRC_REGISTER.data, true);
    const tags = v.getBigUint64(RSRC_REGISTER.tags, true);
    // io_register_rsrc(): rejected before data/tags are read.
    if (!nr || v.getBigUint64(RSRC_REGISTER.resv2, true)) return [];
    if (flags & ~IORING_RSRC_REGISTER_SPARSE) return [];
    if (flags & IORING_RSRC_REGISTER_SPARSE && data) return [];
    // io_sqe_files_register() / io_sqe_buffers_register(): the count is checked
    // (files: also against RLIMIT_NOFILE) before an entry is read.
    const max = kind === "file" ? Math.min(IORING_MAX_FIXED_FILES, nofile) : IORING_MAX_REG_BUFFERS;
    if (nr > max) return [];
    const out: ArgPointer[] = [];
    // A NULL data pointer is all-sparse in the kernel: nothing is read.
    if (data && kind === "file") {
      out.push({ field: "rsrc_register.data", addr: data, bytes: BigInt(4 * nr) });
    }
    if (data && kind === "buffer") {
      out.push({
        field: "rsrc_register.data",
        addr: data,
        bytes: BigInt(IOVEC.SIZE * nr),
        iovecs: nr,
      });
    }
    if (tags) out.push({ field: "rsrc_register.tags", addr: tags, bytes: BigInt(8 * nr) });
    return out;
  };
}

/** data/tags of __io_register_rsrc_update() via io_uring_rsrc_update2. */
function rsrcUpdate2Pointers(kind: "file" | "buffer") {
  return (v: DataView): ArgPointer[] => {
    const nr = v.getUint32(RSRC_UPDATE2.nr, true);
    const offset = v.getUint32(RSRC_UPDATE2.offset, true);
    // io_register_rsrc_update(), then the offset overflow check: no memory read.
    if (!nr || v.getUint32(RSRC_UPDATE2.resv, true) || v.getUint32(RSRC_UPDATE2.resv2, true)) {
      return [];
    }
    if (offset + nr >= U32_LIMIT) return [];
    const data = v.getBigUint64(RSRC_UPDATE2.data, true);
    const tags = v.getBigUint64(RSRC_UPDATE2.tags, true);
    // The update paths read data unconditionally (NULL is -EFAULT in the kernel too).
    const out: ArgPointer[] = kind === "file"
      ? [{ field: "rsrc_update2.data", addr: data, bytes: BigInt(4 * nr) }]
      : [{ field: "rsrc_update2.data", addr: data, bytes: BigInt(IOVEC.SIZE * nr), iovecs: nr }];
    if (tags) out.push({ field: "rsrc_update2.tags", addr: tags, bytes: BigInt(8 * nr) });
    return out;
  };
}

const none = (): ArgPointer[] => [];
const R = IORING_REGISTER;

/**
 * The allow-list: every opcode the sim io_uring mirror implements
 * (`sim/io_uring/register.ts`) plus the proposal's MAP/UNMAP_BUFFERS, with
 * the kernel's (Linux 6.18) memory use for each. Opcodes the mirror does not
 * model (EVENTFD: 4 bytes read; IOWQ_MAX_WORKERS: 8 bytes read and written;
 * RING_FDS, PBUF_RING, ...) are off the list: the sim answers `-EINVAL` for
 * them, so forwarding them on `real` would make the backends disagree.
 */
export const REGISTER_RULES: ReadonlyMap<number, RegisterRule> = new Map(
  ([
    {
      name: "IORING_REGISTER_BUFFERS",
      opcode: R.REGISTER_BUFFERS,
      access: "read",
      argBytes: (nr) => arrayBytes(nr, IOVEC.SIZE, IORING_MAX_REG_BUFFERS),
      pointers: (v, nr) => iovecPointers(v, nr, "iovec"),
      testbedOnly: false,
      summary: "reads 16 * nr_args bytes of iovecs (1..16384); pins each iovec's buffer",
    },
    {
      name: "IORING_UNREGISTER_BUFFERS",
      opcode: R.UNREGISTER_BUFFERS,
      access: "none",
      argBytes: () => 0,
      pointers: none,
      testbedOnly: false,
      summary: "arg must be NULL (-EINVAL otherwise); never dereferenced",
    },
    {
      name: "IORING_REGISTER_FILES",
      opcode: R.REGISTER_FILES,
      access: "read",
      argBytes: (nr, nofile = Infinity) =>
        arrayBytes(nr, 4, Math.min(IORING_MAX_FIXED_FILES, nofile)),
      pointers: none,
      testbedOnly: false,
      summary: "reads 4 * nr_args bytes of fds (1..min(2^20, RLIMIT_NOFILE))",
    },
    {
      name: "IORING_UNREGISTER_FILES",
      opcode: R.UNREGISTER_FILES,
      access: "none",
      argBytes: () => 0,
      pointers: none,
      testbedOnly: false,
      summary: "arg must be NULL (-EINVAL otherwise); never dereferenced",
    },
    {
      name: "IORING_REGISTER_FILES_UPDATE",
      opcode: R.REGISTER_FILES_UPDATE,
      access: "read",
      argBytes: (nr) => (nr >= 1 ? RSRC_UPDATE.SIZE : 0),
      pointers: (v, nr) => {
        if (v.getUint32(RSRC_UPDATE.resv, true)) return [];
        if (v.getUint32(RSRC_UPDATE.offset, true) + nr >= U32_LIMIT) return [];
        const data = v.getBigUint64(RSRC_UPDATE.data, true);
        return [{ field: "rsrc_update.data", addr: data, bytes: BigInt(4 * nr) }];
      },
      testbedOnly: false,
      summary: "reads a 16-byte io_uring_rsrc_update; its data: 4 * nr_args bytes of fds",
    },
    {
      name: "IORING_REGISTER_PROBE",
      opcode: R.REGISTER_PROBE,
      access: "read-write",
      // The kernel clamps nr_args to its IORING_OP_LAST, which differs from
      // kernel to kernel: the caller's own nr_args is the bound that holds.
      argBytes: (nr) => (nr <= 256 ? PROBE.SIZE + PROBE.OP_SIZE * nr : 0),
      pointers: none,
      testbedOnly: false,
      summary: "reads and writes 16 + 8 * nr_args bytes (nr_args <= 256; the kernel clamps " +
        "to its IORING_OP_LAST)",
    },
    {
      name: "IORING_REGISTER_ENABLE_RINGS",
      opcode: R.REGISTER_ENABLE_RINGS,
      access: "none",
      argBytes: () => 0,
      pointers: none,
      testbedOnly: false,
      summary: "arg must be NULL (-EINVAL otherwise); never dereferenced",
    },
    {
      name: "IORING_REGISTER_FILES2",
      opcode: R.REGISTER_FILES2,
      access: "read",
      argBytes: (nr) => (nr === RSRC_REGISTER.SIZE ? RSRC_REGISTER.SIZE : 0),
      pointers: rsrcRegisterPointers("file"),
      testbedOnly: false,
      summary: "nr_args is the size (32): reads io_uring_rsrc_register; data: 4 * nr bytes " +
        "of fds (NULL: sparse), tags: 8 * nr bytes",
    },
    {
      name: "IORING_REGISTER_FILES_UPDATE2",
      opcode: R.REGISTER_FILES_UPDATE2,
      access: "read",
      argBytes: (nr) => (nr === RSRC_UPDATE2.SIZE ? RSRC_UPDATE2.SIZE : 0),
      pointers: rsrcUpdate2Pointers("file"),
      testbedOnly: false,
      summary: "nr_args is the size (32): reads io_uring_rsrc_update2; data: 4 * nr bytes " +
        "of fds, tags: 8 * nr bytes",
    },
    {
      name: "IORING_REGISTER_BUFFERS2",
      opcode: R.REGISTER_BUFFERS2,
      access: "read",
      argBytes: (nr) => (nr === RSRC_REGISTER.SIZE ? RSRC_REGISTER.SIZE : 0),
      pointers: rsrcRegisterPointers("buffer"),
      testbedOnly: false,
      summary: "nr_args is the size (32): reads io_uring_rsrc_register; data: 16 * nr bytes " +
        "of iovecs (NULL: sparse), each buffer pinned; tags: 8 * nr bytes",
    },
    {
      name: "IORING_REGISTER_BUFFERS_UPDATE",
      opcode: R.REGISTER_BUFFERS_UPDATE,
      access: "read",
      argBytes: (nr) => (nr === RSRC_UPDATE2.SIZE ? RSRC_UPDATE2.SIZE : 0),
      pointers: rsrcUpdate2Pointers("buffer"),
      testbedOnly: false,
      summary: "nr_args is the size (32): reads io_uring_rsrc_update2; data: 16 * nr bytes " +
        "of iovecs, each buffer pinned; tags: 8 * nr bytes",
    },
    {
      name: "IORING_REGISTER_MAP_BUFFERS",
      opcode: R.REGISTER_MAP_BUFFERS,
      access: "read",
      argBytes: (nr) => (nr === 1 ? MAP_BUFFERS.SIZE : 0),
      pointers: none,
      testbedOnly: true,
      summary: "the proposal's: nr_args 1, reads a 32-byte io_uring_map_buffers; never sent " +
        "to a live kernel",
    },
    {
      name: "IORING_REGISTER_UNMAP_BUFFERS",
      opcode: R.REGISTER_UNMAP_BUFFERS,
      access: "read",
      argBytes: (nr) => (nr === 1 ? MAP_BUFFERS.SIZE : 0),
      pointers: none,
      testbedOnly: true,
      summary: "the proposal's: nr_args 1, reads a 32-byte io_uring_map_buffers; never sent " +
        "to a live kernel",
    },
  ] as RegisterRule[]).map((r) => [r.opcode, r]),
);

/** True for an integer in [0, 2^32): what a `u32` syscall argument can hold without coercion. */
export function isU32(x: unknown): x is number {
  return typeof x === "number" && Number.isInteger(x) && x >= 0 && x < U32_LIMIT;
}

/** Check one pointer (and, for an iovec array, the buffers it names); 0 or -EFAULT. */
function checkPointer(p: ArgPointer, mem: UserMemory): number {
  if (!mem.covers(p.addr, p.bytes)) return -Errno.EFAULT;
  if (p.iovecs === undefined) return 0;
  const raw = mem.read(p.addr, Number(p.bytes));
  if (raw === null) return -Errno.EFAULT;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (const q of iovecPointers(v, p.iovecs, `${p.field} iovec`)) {
    if (!mem.covers(q.addr, q.bytes)) return -Errno.EFAULT;
  }
  return 0;
}

/**
 * The register guard (see the module doc for the order): the rule to go on
 * with, or the negative errno to answer without a system call. A
 * zero-length `arg` counts as NULL. `nofile` is the process's RLIMIT_NOFILE:
 * a file count above it is -EMFILE before the kernel reads the fd array, so
 * the guard asks for no memory then.
 */
export function registerGuard(
  opcode: unknown,
  arg: Uint8Array | null,
  nrArgs: unknown,
  mem: UserMemory,
  nofile = Infinity,
): RegisterRule | number {
  if (!isU32(opcode) || !isU32(nrArgs)) return -Errno.EINVAL;
  if (opcode & IORING_REGISTER_USE_REGISTERED_RING) return -Errno.EINVAL;
  const rule = REGISTER_RULES.get(opcode);
  if (rule === undefined) return -Errno.EINVAL;
  if (arg === null || arg.length === 0) return rule;
  const need = rule.argBytes(nrArgs, nofile);
  if (arg.length < need) return -Errno.EFAULT;
  if (need === 0) return rule;
  const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  for (const p of rule.pointers(view, nrArgs, nofile)) {
    const r = checkPointer(p, mem);
    if (r < 0) return r;
  }
  return rule;
}

/**
 * The buffers a list of iovecs would have the kernel pin: 0 when each one
 * the kernel would pin lies in `mem`, else -EFAULT (for the typed
 * register/update-buffers helpers that build their own iovec array).
 */
export function checkIovecTargets(
  bufs: readonly { addr: bigint; len: number }[],
  mem: UserMemory,
): number {
  const iov = new Uint8Array(IOVEC.SIZE * bufs.length);
  const v = new DataView(iov.buffer);
  bufs.forEach((b, i) => {
    v.setBigUint64(i * IOVEC.SIZE + IOVEC.base, BigInt.asUintN(64, b.addr), true);
    v.setBigUint64(i * IOVEC.SIZE + IOVEC.len, BigInt.asUintN(64, BigInt(b.len)), true);
  });
  for (const q of iovecPointers(v, bufs.length, "iovec")) {
    if (!mem.covers(q.addr, q.bytes)) return -Errno.EFAULT;
  }
  return 0;
}
