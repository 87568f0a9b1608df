/**
 * The `sim` backend's testbed: a simulated kernel (memory, fd table, files),
 * the io_uring mirror as the application ring, and an NVMe namespace at
 * `/dev/nvme0n1` behind the simulated host stack. Needs no Deno permission.
 *
 * @module
 */

import { Kernel } from "./kernel.ts";
import { attachNvme, type NvmeHost } from "./host.ts";
import { SimRing } from "./io_uring/io_uring.ts";
import { doSysOpen, lookupInode, sysClose, sysUnlink } from "./fs/namei.ts";
import { ErrnoError } from "./uapi/errno.ts";
import { IORING_SETUP, PARAMS } from "./uapi/io_uring.ts";
import { Ring, type UserBuffer } from "./uapi/ring_api.ts";
import type { RingOptions, Testbed, TestbedOptions } from "./uapi/testbed.ts";

/** Open a testbed on the simulated host. */
export function openSimTestbed(opts: TestbedOptions = {}): Testbed {
  return new SimTestbed(opts);
}

class SimTestbed implements Testbed {
  readonly backend = "sim" as const;
  readonly seed: number;
  readonly kernel: Kernel;
  readonly host: NvmeHost;
  readonly #rings = new Set<Ring>();
  readonly #buffers = new Set<bigint>();
  readonly #temps = new Set<string>();
  #closed = false;

  constructor(opts: TestbedOptions) {
    this.seed = opts.seed ?? 1;
    this.kernel = new Kernel({
      seed: this.seed,
      capSysAdmin: opts.capSysAdmin ?? true,
      timing: opts.timing ?? true,
    });
    this.host = attachNvme(this.kernel, {
      iommu: opts.iommu ?? "strict",
      namespaces: opts.namespaces,
      dmaMapSupported: opts.dmaMapSupported ?? true,
    });
  }

  get stats() {
    return this.kernel.stats;
  }

  get nvmeDevice(): string {
    return this.host.namespaces[0].path;
  }

  allocBuffer(len: number): UserBuffer {
    this.#live();
    if (!Number.isInteger(len) || len <= 0 || len > 1 << 30) {
      throw new RangeError(`allocBuffer: len ${len} outside [1, 1 GiB]`);
    }
    const vma = this.kernel.mm.mmap(len);
    this.#buffers.add(vma.start);
    const buffers = this.#buffers;
    const mm = this.kernel.mm;
    let bytes = vma.bytes.subarray(0, len);
    return {
      addr: vma.start,
      get bytes() {
        return bytes;
      },
      [Symbol.dispose]() {
        if (!buffers.delete(vma.start)) return;
        bytes = new Uint8Array(0);
        mm.munmap(vma.start);
      },
    };
  }

  open(path: string, flags: number, _mode = 0o644): number {
    this.#live();
    return doSysOpen(this.kernel, path, flags);
  }

  close(fd: number): number {
    this.#live();
    return sysClose(this.kernel, fd);
  }

  tempPath(name: string): string {
    if (name.includes("/")) throw new RangeError(`tempPath: '${name}' must be a plain name`);
    const p = `/tmp/${name}`;
    this.#temps.add(p);
    return p;
  }

  readFile(path: string): Uint8Array {
    const inode = lookupInode(this.kernel, path);
    if (!inode) throw new ErrnoError(-2, `readFile ${path}`);
    return inode.contents().slice();
  }

  ring(opts: RingOptions): Ring {
    this.#live();
    const params = new Uint8Array(PARAMS.SIZE);
    const v = new DataView(params.buffer);
    let flags = opts.flags ?? 0;
    if (opts.cqEntries !== undefined) {
      flags |= IORING_SETUP.CQSIZE;
      v.setUint32(PARAMS.cqEntries, opts.cqEntries, true);
    }
    v.setUint32(PARAMS.flags, flags, true);
    const r = SimRing.setup(this.kernel, opts.entries, params);
    if (typeof r === "number") throw new ErrnoError(r, "io_uring_setup");
    const ring = new Ring(r, (len) => this.allocBuffer(len));
    this.#rings.add(ring);
    const rings = this.#rings;
    const dispose = ring[Symbol.dispose].bind(ring);
    ring[Symbol.dispose] = () => {
      if (rings.delete(ring)) dispose();
    };
    return ring;
  }

  #live(): void {
    if (this.#closed) throw new Error("testbed used after dispose");
  }

  [Symbol.dispose](): void {
    if (this.#closed) return;
    for (const r of [...this.#rings]) r[Symbol.dispose]();
    for (const p of this.#temps) sysUnlink(this.kernel, p);
    this.host[Symbol.dispose]();
    for (const a of [...this.#buffers]) {
      this.#buffers.delete(a);
      this.kernel.mm.munmap(a);
    }
    this.#closed = true;
  }
}
