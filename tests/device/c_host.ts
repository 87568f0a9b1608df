/**
 * The device-test host ({@link QueueHost}) in front of the C controller
 * (libnvme_emu.so through `ffi/nvme_emu.ts`, inline mode): host frames are
 * one native buffer registered in the controller's frame table at a fixed
 * pfn, handed out contiguously, so a test body written against `QueueHost`
 * runs unchanged on both controllers.
 *
 * @module
 */

import { allocBuffer, type NativeBuffer } from "../../ffi/libc.ts";
import { NvmeEmu, type NvmeEmuConfig, nvmeEmuUnavailable } from "../../ffi/nvme_emu.ts";
import { PAGE_SIZE } from "../../sim/memory/phys.ts";
import { QueueHost, type Region } from "./harness.ts";

/** First pfn of the host's frames (bus address 1 GiB, IOMMU off). */
const BASE_PFN = 0x40000;
/** Host frames when the caller names no number: 8 MiB, room for a 4 MiB transfer and its lists. */
const DEFAULT_FRAMES = 2048;

/** Why the C controller cannot run here, or null (the plain build, FFI allowed). */
export function cHostUnavailable(): string | null {
  return nvmeEmuUnavailable("plain");
}

/** Test host around one C controller. */
export class CHost extends QueueHost<NvmeEmu> {
  readonly #buf: NativeBuffer;
  readonly #frames: number;
  #next = 0;

  /**
   * `cfg` as the TypeScript controller takes it (namespaces default to its
   * one 1 GiB namespace of 4096-byte LBAs); `frames` host pages.
   */
  constructor(cfg: Partial<NvmeEmuConfig> = {}, frames = DEFAULT_FRAMES, seed = 7) {
    const emu = NvmeEmu.create({
      namespaces: [{ lbaSize: 4096, sizeBytes: 1n << 30n }],
      seed,
      ...cfg,
      mode: "inline",
    });
    super(emu);
    try {
      this.#buf = allocBuffer(frames * PAGE_SIZE);
    } catch (e) {
      emu[Symbol.dispose]();
      throw e;
    }
    this.#frames = frames;
    emu.frameMap(BASE_PFN, frames, this.#buf.ptr);
  }

  alloc(npages: number): Region {
    if (!Number.isInteger(npages) || npages < 1 || this.#next + npages > this.#frames) {
      throw new RangeError(`CHost.alloc(${npages}): ${this.#frames - this.#next} frames left`);
    }
    const first = this.#next;
    this.#next += npages;
    const bytes = this.#buf.bytes.subarray(first * PAGE_SIZE, (first + npages) * PAGE_SIZE);
    bytes.fill(0);
    const size = bytes.length;
    const bounds = (off: number, len: number) => {
      if (off < 0 || len < 0 || off + len > size) {
        throw new RangeError(`region of ${size} bytes: [${off}, ${off + len})`);
      }
    };
    return {
      pfn: BASE_PFN + first,
      npages,
      addr: BigInt(BASE_PFN + first) * BigInt(PAGE_SIZE),
      read(off, len) {
        bounds(off, len);
        return bytes.slice(off, off + len);
      },
      write(off, data) {
        bounds(off, data.length);
        bytes.set(data, off);
      },
    };
  }

  step(): void {
    this.ctrl.process(64);
  }

  mediaRead(nsid: number, pos: number, len: number): Uint8Array {
    return this.ctrl.mediaRead(nsid, pos, len);
  }

  override [Symbol.dispose](): void {
    this.ctrl[Symbol.dispose]();
    this.#buf[Symbol.dispose]();
  }

  /** Enable and create I/O queue pair 1. */
  static ready(cfg: Partial<NvmeEmuConfig> = {}, ioSize = 16): CHost {
    const h = new CHost(cfg);
    try {
      return h.start(ioSize);
    } catch (e) {
      h[Symbol.dispose]();
      throw e;
    }
  }
}
