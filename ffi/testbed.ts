/**
 * The `real` backend's testbed: the live kernel io_uring (through
 * `ffi/liburing.ts`), files opened with libc in a private temporary
 * directory, and page-aligned native buffers. Everything it hands out is
 * released when the testbed is disposed.
 *
 * The emulated NVMe controller of the real backend is not part of this
 * backend yet, so {@link Testbed.nvmeDevice} is undefined here and the
 * proposal's register opcodes answer -EINVAL, as the live kernel does for
 * opcodes it lacks.
 *
 * Register calls on its rings may point only into memory this testbed
 * handed out (`allocBuffer`, and the argument arrays its rings allocate):
 * the register guard (`sim/uapi/register_rules.ts`) answers anything else
 * with -EFAULT before the kernel sees it, as the sim does.
 *
 * @module
 */

import { Errno, ErrnoError } from "../sim/uapi/errno.ts";
import { Ring, type UserBuffer } from "../sim/uapi/ring_api.ts";
import {
  Handouts,
  type RingOptions,
  type Testbed,
  type TestbedOptions,
} from "../sim/uapi/testbed.ts";
import { allocBuffer, Libc, NativeMemory } from "./libc.ts";
import { LiveRing, liveRingUnavailable } from "./liburing.ts";

/** Why the real backend cannot run here, or null when it can. */
export function realBackendUnavailable(): string | null {
  return liveRingUnavailable();
}

/** Open a testbed on the live kernel. Throws with the reason when it cannot run here. */
export function openRealTestbed(_opts: TestbedOptions = {}): Testbed {
  const why = liveRingUnavailable();
  if (why !== null) throw new Error(`real backend unavailable: ${why}`);
  return new RealTestbed();
}

class RealTestbed implements Testbed {
  readonly backend = "real" as const;
  readonly seed = 0;
  readonly stats = undefined;
  readonly nvmeDevice = undefined;
  readonly #libc = Libc.open();
  readonly #dir = Deno.makeTempDirSync({ prefix: "premap-real-" });
  readonly #buffers = new Handouts();
  /** What #buffers holds, by address: the only memory register arguments may point into. */
  readonly #memory = new NativeMemory();
  readonly #fds = new Set<number>();
  readonly #rings = new Handouts();
  #closed = false;

  allocBuffer(len: number): UserBuffer {
    this.#live();
    return this.#buffers.adopt(this.#memory.adopt(allocBuffer(len)));
  }

  open(path: string, flags: number, mode = 0o644): number {
    this.#live();
    if (typeof path !== "string") return -Errno.EFAULT; // a NULL pathname
    const fd = this.#libc.open(path, flags, mode);
    if (fd >= 0) this.#fds.add(fd);
    return fd;
  }

  close(fd: number): number {
    this.#live();
    const r = this.#libc.close(fd);
    if (r === 0) this.#fds.delete(fd);
    return r;
  }

  tempPath(name: string): string {
    if (name.includes("/")) throw new RangeError(`tempPath: '${name}' must be a plain name`);
    return `${this.#dir}/${name}`;
  }

  readFile(path: string): Uint8Array {
    return Deno.readFileSync(path);
  }

  ring(opts: RingOptions): Ring {
    this.#live();
    const r = LiveRing.create(opts.entries, {
      flags: opts.flags,
      cqEntries: opts.cqEntries,
      memory: this.#memory,
    });
    if (!("ring" in r)) throw new ErrnoError(r.res, "io_uring_setup");
    return this.#rings.adopt(new Ring(r.ring, (len) => this.allocBuffer(len)));
  }

  #live(): void {
    if (this.#closed) throw new Error("testbed used after dispose");
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#rings.disposeAll();
    for (const fd of this.#fds) this.#libc.close(fd);
    this.#fds.clear();
    this.#buffers.disposeAll();
    this.#closed = true;
    this.#libc[Symbol.dispose]();
    Deno.removeSync(this.#dir, { recursive: true });
  }
}
