/**
 * Shared set-up for block/NVMe tests: a kernel with one attached controller,
 * a block device file, and synchronous wrappers that run the simulation until
 * an asynchronous I/O completes.
 *
 * @module
 */

import { Kernel } from "../../sim/kernel.ts";
import { attachNvme, type AttachNvmeOptions, type NvmeHost } from "../../sim/host.ts";
import type { File, Kiocb } from "../../sim/fs/file.ts";
import { IOCB } from "../../sim/fs/file.ts";
import { O } from "../../sim/uapi/io_uring.ts";
import { Errno } from "../../sim/uapi/errno.ts";
import type { IovIter } from "../../sim/block/iov_iter.ts";
import type { BioVec } from "../../sim/block/bvec.ts";

/** A kernel, a controller and an opened block device file. */
export interface Rig {
  kernel: Kernel;
  host: NvmeHost;
  file: File;
}

/** Build a rig; the file is opened O_RDWR|O_DIRECT unless `flags` says otherwise. */
export function makeRig(
  seed: number,
  opts: Partial<AttachNvmeOptions> = {},
  flags = O.RDWR | O.DIRECT,
): Rig {
  const kernel = new Kernel({ seed, timing: false });
  const host = attachNvme(kernel, { iommu: "off", ...opts });
  const f = kernel.devices.get(host.namespaces[0].path)!(host.namespaces[0].path, flags);
  if (typeof f === "number") throw new Error(`open failed ${f}`);
  return { kernel, host, file: f };
}

/** Issue a read or write and run the simulation until it completes; returns the result. */
export function rw(rig: Rig, iter: IovIter, pos: bigint, extraFlags = 0): number {
  let res: number | undefined;
  const iocb: Kiocb = {
    file: rig.file,
    pos,
    flags: ((rig.file.flags & O.DIRECT) ? IOCB.DIRECT : 0) | extraFlags,
    complete: (r) => {
      if (res !== undefined) throw new Error("ki_complete called twice");
      res = r;
    },
  };
  const fop = iter.dir === "write" ? rig.file.fOp.writeIter! : rig.file.fOp.readIter!;
  const r = fop(iocb, iter);
  if (r !== -Errno.EIOCBQUEUED) return r;
  rig.kernel.runUntil(() => res !== undefined);
  if (res === undefined) throw new Error("I/O never completed");
  return res;
}

/** A registered-buffer style bvec array over [addr, addr+len) (pinned once, like io_sqe_buffer_register). */
export function pinBvecs(rig: Rig, addr: bigint, len: number): BioVec[] {
  const r = rig.kernel.mm.pinUserPages(addr, len);
  if (typeof r === "number") throw new Error(`pin failed ${r}`);
  const out: BioVec[] = [];
  let off = r.offset;
  let left = len;
  for (const page of r.pages) {
    const n = Math.min(4096 - off, left);
    out.push({ page, offset: off, len: n });
    left -= n;
    off = 0;
  }
  return out;
}
