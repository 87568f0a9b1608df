/**
 * Linux errno values (include/uapi/asm-generic/errno-base.h, errno.h, and the
 * kernel-internal include/linux/errno.h), with names for error reporting.
 *
 * uAPI calls in this testbed return the kernel's convention: a non-negative
 * result or a negative errno. {@link errnoName} turns `-22` into `"EINVAL"`.
 *
 * @module
 */

/** Errno numbers by name, as in the kernel headers (x86_64). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  ENODATA: 61,
  ETIME: 62,
  ENOLINK: 67,
  EOVERFLOW: 75,
  EBADFD: 77,
  EILSEQ: 84,
  ENOTSOCK: 88,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
  ETIMEDOUT: 110,
  EALREADY: 114,
  EREMOTEIO: 121,
  ECANCELED: 125,
  /** Kernel-internal (include/linux/errno.h); never reaches user space from a syscall. */
  ENOTSUPP: 524,
  /** Kernel-internal: the iocb was queued and completes later through ki_complete. */
  EIOCBQUEUED: 529,
} as const;

/** An errno name known to this table. */
export type ErrnoName = keyof typeof Errno;

const byNumber: Map<number, ErrnoName> = new Map(
  (Object.entries(Errno) as [ErrnoName, number][]).map(([k, v]) => [v, k]),
);

/**
 * Name of an errno, given either sign (`22` or `-22` -> `"EINVAL"`).
 *
 * @example
 * ```ts
 * import { errnoName } from "./errno.ts";
 * console.log(errnoName(-22)); // "EINVAL"
 * ```
 */
export function errnoName(err: number): string {
  const n = Math.abs(err);
  return byNumber.get(n) ?? `E${n}`;
}

/**
 * Human-readable form of a negative-errno result: `"-22 (EINVAL)"`, or the
 * number itself when it is not an error.
 */
export function describeResult(res: number): string {
  return res < 0 ? `${res} (${errnoName(res)})` : String(res);
}

/** An exception carrying a kernel errno, for APIs that throw rather than return. */
export class ErrnoError extends Error {
  /** Positive errno number. */
  readonly errno: number;
  /** Errno name, e.g. `"EINVAL"`. */
  readonly code: string;
  /** Build from a negative or positive errno and a context string. */
  constructor(err: number, context: string) {
    const n = Math.abs(err);
    super(`${context}: ${errnoName(n)} (${n})`);
    this.errno = n;
    this.code = errnoName(n);
    this.name = "ErrnoError";
  }
}
