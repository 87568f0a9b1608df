/**
 * The process file descriptor table (fs/file.c): `struct files_struct` with
 * lowest-free-descriptor allocation, fget/close, and a bound on open files
 * (RLIMIT_NOFILE).
 *
 * The simulated host runs one process, so each {@link Kernel} has one table,
 * held in `kernel.files` and reached through {@link filesOf} the way kernel
 * code reaches `current->files`.
 *
 * @module
 */

import type { Kernel } from "../kernel.ts";
import { Errno } from "../uapi/errno.ts";
import { type File, fput, getFile } from "./file.ts";

/** Default RLIMIT_NOFILE soft limit (1024, as on a stock distribution). */
export const NR_OPEN_DEFAULT = 1024;

/** struct files_struct: descriptors to files. */
export class FdTable implements Disposable {
  readonly #fds: (File | null)[] = [];
  /** rlimit(RLIMIT_NOFILE): descriptors must be below this. */
  readonly maxFds: number;

  /** An empty table admitting descriptors `0 .. maxFds-1`. */
  constructor(maxFds = NR_OPEN_DEFAULT) {
    if (!Number.isInteger(maxFds) || maxFds <= 0) throw new RangeError(`bad maxFds ${maxFds}`);
    this.maxFds = maxFds;
  }

  /** get_unused_fd_flags() + fd_install(): the lowest free descriptor takes `file`'s reference. */
  install(file: File): number {
    let fd = this.#fds.indexOf(null);
    if (fd < 0) fd = this.#fds.length;
    if (fd >= this.maxFds) return -Errno.EMFILE;
    this.#fds[fd] = file;
    return fd;
  }

  /** files_lookup_fd_raw(): the file at `fd`, without taking a reference. */
  lookup(fd: number): File | undefined {
    if (!Number.isInteger(fd) || fd < 0 || fd >= this.#fds.length) return undefined;
    return this.#fds[fd] ?? undefined;
  }

  /** fget(): a new reference to the file at `fd`, or undefined. */
  fget(fd: number): File | undefined {
    const f = this.lookup(fd);
    return f ? getFile(f) : undefined;
  }

  /** close_fd(): 0, or -EBADF for a descriptor that is not open. */
  close(fd: number): number {
    const f = this.lookup(fd);
    if (!f) return -Errno.EBADF;
    this.#fds[fd] = null;
    while (this.#fds.length > 0 && this.#fds[this.#fds.length - 1] === null) this.#fds.pop();
    fput(f);
    return 0;
  }

  /** Descriptors currently open. */
  get openCount(): number {
    return this.#fds.filter((f) => f !== null).length;
  }

  /** put_files_struct(): close every descriptor, highest first. */
  [Symbol.dispose](): void {
    for (let fd = this.#fds.length - 1; fd >= 0; fd--) if (this.#fds[fd]) this.close(fd);
  }
}

/** `current->files`: the fd table of the simulated host's one process ({@link Kernel.files}). */
export function filesOf(kernel: Kernel): FdTable {
  return kernel.files;
}
