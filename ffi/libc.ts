/**
 * libc through `Deno.dlopen("libc.so.6")`: the few file calls the live-kernel
 * tests and benchmarks need, returning the kernel convention (a non-negative
 * result or a negative errno, read through `__errno_location`), and
 * page-aligned native I/O buffers for O_DIRECT and registered buffers.
 *
 * Buffers are freed deterministically: `[Symbol.dispose]` first detaches the
 * JavaScript view (`ArrayBuffer.prototype.transfer()`), so a stale view
 * throws instead of touching freed memory, then calls `free()`.
 *
 * @example
 * ```ts
 * import { allocBuffer, Libc, O } from "./libc.ts";
 * using libc = Libc.open();
 * using buf = allocBuffer(4096);
 * buf.bytes.fill(0x5a);
 * const fd = libc.open("/tmp/premap-example", O.RDWR | O.CREAT | O.TRUNC, 0o600);
 * console.log(libc.pwrite(fd, buf.addr, 4096, 0)); // 4096
 * libc.close(fd);
 * libc.unlink("/tmp/premap-example");
 * ```
 *
 * @module
 */

import { O } from "../sim/uapi/io_uring.ts";
import type { UserMemory } from "../sim/uapi/register_rules.ts";

export { O };

/** Host page size assumed by the testbed (x86_64). */
export const PAGE_SIZE = 4096;
/** Limit on one native buffer: 1 GiB, the kernel's largest registered buffer. */
export const MAX_BUFFER_BYTES = 1 << 30;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32", nonblocking: false },
  close: { parameters: ["i32"], result: "i32", nonblocking: false },
  ftruncate: { parameters: ["i32", "i64"], result: "i32", nonblocking: false },
  fsync: { parameters: ["i32"], result: "i32", nonblocking: false },
  pread: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize", nonblocking: false },
  pwrite: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize", nonblocking: false },
  unlink: { parameters: ["buffer"], result: "i32", nonblocking: false },
  __errno_location: { parameters: [], result: "pointer", nonblocking: false },
  mmap: {
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
    nonblocking: false,
  },
  munmap: { parameters: ["pointer", "usize"], result: "i32", nonblocking: false },
  mprotect: { parameters: ["pointer", "usize", "i32"], result: "i32", nonblocking: false },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32", nonblocking: false },
} as const;

type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let shared: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

/** The process-wide libc handle (opened once; libc is never unloaded). */
function libcSymbols(): LibcSymbols {
  shared ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return shared.symbols;
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  if (s.includes("\0")) throw new TypeError(`path contains NUL: ${JSON.stringify(s)}`);
  return new TextEncoder().encode(s + "\0");
}

function ptrOf(addr: bigint): Deno.PointerValue {
  return Deno.UnsafePointer.create(addr);
}

/** File calls with kernel-style results: `>= 0` or `-errno`. */
export class Libc implements Disposable {
  readonly #sym: LibcSymbols;
  readonly #errno: Deno.UnsafePointerView;

  private constructor(sym: LibcSymbols) {
    this.#sym = sym;
    const p = sym.__errno_location();
    if (p === null) throw new Error("__errno_location returned NULL");
    this.#errno = new Deno.UnsafePointerView(p);
  }

  /** Open libc (needs --allow-ffi). */
  static open(): Libc {
    return new Libc(libcSymbols());
  }

  #ret(r: number): number {
    return r < 0 ? -this.#errno.getInt32() : r;
  }

  /** open(2) */
  open(path: string, flags: number, mode = 0o644): number {
    return this.#ret(this.#sym.open(cString(path), flags, mode));
  }

  /** close(2) */
  close(fd: number): number {
    return this.#ret(this.#sym.close(fd));
  }

  /** ftruncate(2) */
  ftruncate(fd: number, length: number): number {
    return this.#ret(this.#sym.ftruncate(fd, BigInt(length)));
  }

  /** fsync(2) */
  fsync(fd: number): number {
    return this.#ret(this.#sym.fsync(fd));
  }

  /** pread(2) into native memory at `addr`. */
  pread(fd: number, addr: bigint, len: number, offset: number): number {
    return this.#ret(Number(this.#sym.pread(fd, ptrOf(addr), BigInt(len), BigInt(offset))));
  }

  /** pwrite(2) from native memory at `addr`. */
  pwrite(fd: number, addr: bigint, len: number, offset: number): number {
    return this.#ret(Number(this.#sym.pwrite(fd, ptrOf(addr), BigInt(len), BigInt(offset))));
  }

  /** unlink(2) */
  unlink(path: string): number {
    return this.#ret(this.#sym.unlink(cString(path)));
  }

  /** Nothing to release: the libc handle is process-wide. */
  [Symbol.dispose](): void {}
}

/**
 * Native memory handed out by {@link allocBuffer}: the `UserMemory` of the
 * register guard (sim/uapi/register_rules.ts) on the real backend. Each
 * buffer counts with its whole page-rounded allocation, as an mmap of the
 * same length would on the sim. A buffer leaves the set when it is disposed,
 * before its memory is freed.
 */
export class NativeMemory implements UserMemory {
  /** start -> end (exclusive) of each live allocation. */
  readonly #regions = new Map<bigint, bigint>();

  /** Track `[addr, addr + size)` until {@link NativeMemory.remove}. */
  add(addr: bigint, size: number): void {
    this.#regions.set(addr, addr + BigInt(size));
  }

  /** Stop tracking the allocation at `addr`. */
  remove(addr: bigint): void {
    this.#regions.delete(addr);
  }

  /** Track `buf` until it is disposed (wraps its `[Symbol.dispose]`); returns it. */
  adopt<T extends NativeBuffer>(buf: T): T {
    this.add(buf.addr, buf.size);
    const dispose = buf[Symbol.dispose].bind(buf);
    const remove = () => this.remove(buf.addr);
    Object.defineProperty(buf, Symbol.dispose, {
      value() {
        remove();
        dispose();
      },
      configurable: true,
    });
    return buf;
  }

  /** Every byte of `[addr, addr + len)` lies in tracked allocations (adjacent ones join). */
  covers(addr: bigint, len: bigint): boolean {
    if (len < 0n || addr < 0n || addr + len > 1n << 64n) return false;
    let at = addr;
    const end = addr + len;
    while (at < end) {
      let next = -1n;
      for (const [start, stop] of this.#regions) {
        if (start <= at && at < stop) {
          next = stop;
          break;
        }
      }
      if (next < 0n) return false;
      at = next;
    }
    return true;
  }

  /** A copy of `[addr, addr + len)` when it lies in tracked allocations, else null. */
  read(addr: bigint, len: number): Uint8Array | null {
    if (!Number.isInteger(len) || len < 0 || !this.covers(addr, BigInt(len))) return null;
    const out = new Uint8Array(len);
    const p = Deno.UnsafePointer.create(addr);
    if (len > 0 && p !== null) new Deno.UnsafePointerView(p).copyInto(out);
    return out;
  }
}

/** Every live {@link allocBuffer} of this process: the guard's memory for a bare `LiveRing`. */
export const processMemory: NativeMemory = new NativeMemory();

/** A page-aligned native buffer: its address and a byte view over it. */
export interface NativeBuffer extends Disposable {
  /** Native (user virtual) address, page aligned. */
  readonly addr: bigint;
  /** Bytes allocated: `len` rounded up to whole pages. */
  readonly size: number;
  /** The bytes (detached once disposed). */
  readonly bytes: Uint8Array;
  /** The pointer, for FFI calls. */
  readonly ptr: Deno.PointerObject;
}

/**
 * A zeroed, page-aligned native buffer of `len` bytes (1 .. 1 GiB), freed by
 * `[Symbol.dispose]`. It is a mapping of its own followed by one inaccessible
 * guard page (PROT_NONE), as the sim's `UserMm.mmap` leaves an unmapped page
 * after each mapping: a kernel copy that runs past the buffer faults (a short
 * transfer or -EFAULT) instead of reaching the process's other memory.
 *
 * @example
 * ```ts
 * import { allocBuffer } from "./libc.ts";
 * using b = allocBuffer(8192);
 * console.log(b.addr % 4096n); // 0n
 * ```
 */
export function allocBuffer(len: number): NativeBuffer {
  if (!Number.isInteger(len) || len <= 0 || len > MAX_BUFFER_BYTES) {
    throw new RangeError(`allocBuffer: len ${len} outside [1, ${MAX_BUFFER_BYTES}]`);
  }
  const sym = libcSymbols();
  const size = Math.ceil(len / PAGE_SIZE) * PAGE_SIZE;
  const whole = BigInt(size + PAGE_SIZE);
  const ptr = sym.mmap(null, whole, PROT_RW, MAP_PRIVATE_ANON, -1, 0n);
  const addr = BigInt(Deno.UnsafePointer.value(ptr));
  if (ptr === null || addr === 0xffff_ffff_ffff_ffffn) {
    throw new Error(`mmap(${whole}) failed: errno ${lastErrno(sym)}`);
  }
  const guard = Deno.UnsafePointer.create(addr + BigInt(size));
  if (sym.mprotect(guard, BigInt(PAGE_SIZE), PROT_NONE) !== 0) {
    const e = lastErrno(sym);
    sym.munmap(ptr, whole);
    throw new Error(`mprotect(guard page) failed: errno ${e}`);
  }
  let bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, len));
  let freed = false;
  processMemory.add(addr, size);
  return {
    addr,
    size,
    ptr,
    get bytes() {
      return bytes;
    },
    [Symbol.dispose]() {
      if (freed) return;
      freed = true;
      processMemory.remove(addr);
      // Detach every view of the native memory before it is unmapped.
      (bytes.buffer as ArrayBuffer).transfer(0);
      bytes = new Uint8Array(0);
      sym.munmap(ptr, whole);
    },
  };
}

/** PROT_READ | PROT_WRITE */
const PROT_RW = 0x1 | 0x2;
/** PROT_NONE */
const PROT_NONE = 0;
/** MAP_PRIVATE | MAP_ANONYMOUS */
const MAP_PRIVATE_ANON = 0x02 | 0x20;
/** MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE */
const MAP_ANON_NORESERVE = 0x02 | 0x20 | 0x4000;

/** An anonymous private mapping: its pointer and length, released by `munmap`. */
export interface NativeMapping extends Disposable {
  /** Start of the mapping. */
  readonly ptr: Deno.PointerObject;
  /** Address of the mapping. */
  readonly addr: bigint;
  /** Length in bytes. */
  readonly length: number;
}

/**
 * mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE):
 * address space reserved without committing memory, faulted in on first touch.
 */
export function mapAnonymous(length: number): NativeMapping {
  if (!Number.isSafeInteger(length) || length <= 0 || length % PAGE_SIZE !== 0) {
    throw new RangeError(`mapAnonymous: length ${length} not a positive page multiple`);
  }
  const sym = libcSymbols();
  const p = sym.mmap(null, BigInt(length), PROT_RW, MAP_ANON_NORESERVE, -1, 0n);
  const addr = BigInt(Deno.UnsafePointer.value(p));
  if (p === null || addr === 0xffff_ffff_ffff_ffffn) {
    throw new Error(`mmap(${length}) failed: errno ${lastErrno(sym)}`);
  }
  let unmapped = false;
  return {
    ptr: p,
    addr,
    length,
    [Symbol.dispose]() {
      if (unmapped) return;
      unmapped = true;
      sym.munmap(p, BigInt(length));
    },
  };
}

function lastErrno(sym: LibcSymbols): number {
  const p = sym.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** RLIMIT_NOFILE (asm-generic/resource.h). */
/** clockid_t values (include/uapi/linux/time.h). */
const CLOCK_ID = { monotonic: 1, realtime: 0, boottime: 7 } as const;

/**
 * clock_gettime(2) in ns on CLOCK_MONOTONIC, CLOCK_BOOTTIME or
 * CLOCK_REALTIME: the clocks io_uring's timeouts run on.
 *
 * @example
 * ```ts
 * import { clockGettimeNs } from "./libc.ts";
 * console.log(clockGettimeNs("monotonic") > 0n); // true
 * ```
 */
export function clockGettimeNs(clock: keyof typeof CLOCK_ID): bigint {
  const ts = new BigInt64Array(2);
  const r = libcSymbols().clock_gettime(CLOCK_ID[clock], new Uint8Array(ts.buffer));
  if (r !== 0) throw new Error(`clock_gettime(${clock}) failed: errno ${lastErrno(libcSymbols())}`);
  return ts[0] * 1_000_000_000n + ts[1];
}

const RLIMIT_NOFILE = 7;

/**
 * The process's soft RLIMIT_NOFILE (getrlimit(2)): the bound the live kernel
 * puts on descriptors and on a fixed file table (-EMFILE), which the `real`
 * backend's host stack and the differential's `sim` side take too.
 *
 * @example
 * ```ts
 * import { processNofileLimit } from "./libc.ts";
 * console.log(processNofileLimit() > 0); // true
 * ```
 */
export function processNofileLimit(): number {
  const rl = new BigUint64Array(2);
  const r = libcSymbols().getrlimit(RLIMIT_NOFILE, new Uint8Array(rl.buffer));
  if (r !== 0) {
    throw new Error(`getrlimit(RLIMIT_NOFILE) failed: errno ${lastErrno(libcSymbols())}`);
  }
  // RLIM_INFINITY, or more than a table can hold: the kernel's own cap (sysctl fs.nr_open).
  return rl[0] > 1n << 30n ? 1 << 30 : Number(rl[0]);
}
