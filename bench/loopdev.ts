/**
 * A loop block device over a scratch file, with direct I/O
 * (`losetup --direct-io=on`): the live kernel's own bio/blk-mq path under
 * our ring and fio, as close to the proposal's NVMe path as this machine
 * has. Root only. Nothing survives an interrupted run: the backing file is
 * unlinked as soon as the loop device holds it, and the device is detached
 * as soon as a holder has it open (the kernel then clears it at the last
 * close).
 *
 * @module
 */

import { Libc } from "../ffi/libc.ts";
import { O } from "../sim/uapi/io_uring.ts";
import { describeResult } from "../sim/uapi/errno.ts";

/** An attached loop device, held open until {@link LoopDevice.release}. */
export interface LoopDevice {
  /** `/dev/loopN`. */
  path: string;
  /** Bytes. */
  sizeBytes: number;
  /** Close the holder: the kernel clears the device once every other opener closes too. */
  release(): void;
}

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: r.code, out: (d.decode(r.stdout) + d.decode(r.stderr)).trim() };
}

/** Why a loop device cannot be had here, or null. */
export async function loopUnavailable(): Promise<string | null> {
  try {
    // `id -u` rather than Deno.uid(), which would need --allow-sys as well.
    const id = await run("id", ["-u"]);
    if (id.out !== "0") return "a loop device needs root (losetup); running as uid " + id.out;
    const r = await run("losetup", ["--version"]);
    if (r.code !== 0) return `'losetup --version' exited ${r.code}: ${r.out}`;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return "'id' or 'losetup' is not on PATH (losetup: Debian's mount package)";
    }
    throw e;
  }
  return null;
}

/**
 * Attach a loop device with direct I/O over a new sparse file of `sizeBytes`
 * in `dir`; the file is unlinked and the device detached (autoclear) before
 * this returns, the device held open by the returned handle.
 */
export async function attachLoop(dir: string, sizeBytes: number): Promise<LoopDevice> {
  const file = `${dir}/premap-loop-${crypto.randomUUID()}.img`;
  const f = Deno.openSync(file, { write: true, create: true, truncate: true });
  try {
    f.truncateSync(sizeBytes);
  } finally {
    f.close();
  }
  let path: string;
  try {
    const r = await run("losetup", ["--find", "--show", "--direct-io=on", file]);
    if (r.code !== 0 || !r.out.startsWith("/dev/loop")) {
      throw new Error(`losetup --find --show --direct-io=on: ${r.out}`);
    }
    path = r.out.split("\n")[0];
  } finally {
    Deno.removeSync(file);
  }
  // The holder is opened through libc (FFI), as the ring opens it: Deno's own open of a device
  // node would need --allow-all. Whatever happens, the device is detached before returning.
  // Lay the whole device out (every block written once), so reads hit allocated blocks of the
  // backing file, for our ring and fio alike, not holes.
  const dd = await run("dd", [
    "if=/dev/zero",
    `of=${path}`,
    "bs=1M",
    `count=${Math.ceil(sizeBytes / (1 << 20))}`,
    "oflag=direct",
    "status=none",
  ]);
  const libc = Libc.open();
  const holder = libc.open(path, O.RDONLY | O.CLOEXEC);
  const d = await run("losetup", ["-d", path]);
  if (holder < 0 || d.code !== 0 || dd.code !== 0) {
    if (holder >= 0) libc.close(holder);
    libc[Symbol.dispose]();
    throw new Error(
      holder < 0
        ? `open ${path}: ${describeResult(holder)}`
        : d.code !== 0
        ? `losetup -d ${path}: ${d.out}`
        : `laying out ${path} with dd: ${dd.out}`,
    );
  }
  let open = true;
  return {
    path,
    sizeBytes,
    release() {
      if (!open) return;
      open = false;
      libc.close(holder);
      libc[Symbol.dispose]();
    },
  };
}

/** Whether `path` is still an attached loop device (`/sys/block/loopN/loop/backing_file`). */
export function loopAttached(path: string): boolean {
  const name = path.replace(/^\/dev\//, "");
  try {
    Deno.statSync(`/sys/block/${name}/loop/backing_file`);
    return true;
  } catch {
    return false;
  }
}
