/**
 * The device's side of DMA: every access a device makes to host memory goes
 * through a {@link DeviceDmaPort} built here, which translates each page
 * (through the IOMMU when one is in the path), checks the whole range, and
 * only then touches physical memory. A fault leaves memory untouched.
 *
 * Mirrors QEMU's address_space_rw() through an IOMMU memory region
 * (system/physmem.c, hw/i386/intel_iommu.c vtd_iommu_translate()).
 *
 * @module
 */

import { type Page, PAGE_MASK_LOW, PAGE_SHIFT, PAGE_SIZE, type PhysMem } from "../memory/phys.ts";
import type { DeviceDmaPort, DmaFault } from "./types.ts";

/** Largest single device access the port accepts (a bound, not a hardware limit): 64 MiB. */
export const BUS_MAX_ACCESS_BYTES = 64 << 20;

/** Highest bus address + 1 (64-bit bus). */
const BUS_LIMIT = 1n << 64n;

/** Bus addresses below this are exact as doubles: the page walk runs on numbers. */
const EXACT_LIMIT = BigInt(Number.MAX_SAFE_INTEGER);

/** Translates one bus page for a device access; a physical page address or a fault. */
export interface BusTranslator {
  /** Translate the page holding `addr` for a read (`write` false) or write; page-aligned result. */
  translatePage(addr: bigint, write: boolean): bigint | DmaFault;
  /**
   * The same by page frame number: the physical pfn, or a fault naming
   * `busPfn`'s byte `offset`. Optional: without it the port calls
   * {@link BusTranslator.translatePage}.
   */
  translatePfn?(busPfn: number, offset: number, write: boolean): number | DmaFault;
}

/**
 * Told of every device access that reaches memory (after translation, before
 * the copy): the DMA-API debug checker's view of the device.
 */
export type DeviceAccessObserver = (addr: bigint, len: number, write: boolean) => void;

/**
 * Build the device port: `translator` absent means bus address = physical
 * address; `observer` hears every access that was not refused.
 */
export function createDevicePort(
  phys: PhysMem,
  translator?: BusTranslator,
  observer?: DeviceAccessObserver,
): DeviceDmaPort {
  // The frames of the access being resolved, in order (the page walk's result; reused).
  const frames: Page[] = [];
  const byPfn = translator?.translatePfn?.bind(translator);

  /** The fault that ended the last walk. */
  let fault: DmaFault | null = null;

  /**
   * One bus page to its frame: translated, and RAM (a freed frame in
   * quarantine still is); undefined with `fault` set when it is neither.
   */
  const frameOf = (busPfn: number, off: number, write: boolean): Page | undefined => {
    let pfn = busPfn;
    if (byPfn !== undefined) {
      const t = byPfn(busPfn, off, write);
      if (typeof t !== "number") {
        fault = t;
        return undefined;
      }
      pfn = t;
    } else if (translator !== undefined) {
      const a = (BigInt(busPfn) << BigInt(PAGE_SHIFT)) + BigInt(off);
      const t = translator.translatePage(a, write);
      if (typeof t !== "bigint") {
        fault = t;
        return undefined;
      }
      pfn = Number(t >> BigInt(PAGE_SHIFT));
    }
    const page = phys.busFrame(pfn);
    if (page === undefined) {
      fault = { addr: (BigInt(busPfn) << BigInt(PAGE_SHIFT)) + BigInt(off), reason: "bad-address" };
    }
    return page;
  };

  /**
   * Translate and check every page of [addr, addr + len) before anything is
   * copied (no partial transfer): fills `frames`, returns the offset in the
   * first page, or the first fault.
   */
  const resolve = (addr: bigint, len: number, write: boolean): number | DmaFault => {
    if (!Number.isInteger(len) || len < 0 || len > BUS_MAX_ACCESS_BYTES) {
      throw new RangeError(`DeviceDmaPort: bad length ${len}`);
    }
    frames.length = 0;
    if (addr < 0n || (addr >= EXACT_LIMIT && addr + BigInt(len) > BUS_LIMIT)) {
      return { addr, reason: "bad-address" };
    }
    if (len === 0) return 0;
    // Page numbers (< 2^52) are exact as doubles at any bus address; below 2^53 the address is too.
    let first: number;
    let busPfn: number;
    if (addr < EXACT_LIMIT) {
      const a = Number(addr);
      first = a % PAGE_SIZE;
      busPfn = (a - first) / PAGE_SIZE;
    } else {
      first = Number(addr & BigInt(PAGE_MASK_LOW));
      busPfn = Number(addr >> BigInt(PAGE_SHIFT));
    }
    let off = first;
    for (let done = 0; done < len; done += PAGE_SIZE - off, off = 0, busPfn++) {
      const p = frameOf(busPfn, off, write);
      if (p === undefined) return fault!;
      frames.push(p);
    }
    return first;
  };

  /**
   * One access: check the whole range, tell the observer, then hand each
   * piece of host memory to `visit` in order (`pos`: its offset in the access).
   */
  const access = (
    addr: bigint,
    len: number,
    write: boolean,
    visit: (mem: Uint8Array, pos: number) => void,
  ): DmaFault | null => {
    const first = resolve(addr, len, write);
    if (typeof first !== "number") return first;
    observer?.(addr, len, write);
    let off = first;
    let pos = 0;
    for (let i = 0; i < frames.length; i++) {
      const n = Math.min(PAGE_SIZE - off, len - pos);
      const d = frames[i].data;
      visit(off === 0 && n === d.length ? d : d.subarray(off, off + n), pos);
      pos += n;
      off = 0;
    }
    return null;
  };

  // The copies of readInto() and write(), made once: they read their buffer from these.
  const none = new Uint8Array(0);
  let into: Uint8Array = none;
  let from: Uint8Array = none;
  const copyOut = (mem: Uint8Array, pos: number) => into.set(mem, pos);
  const copyIn = (mem: Uint8Array, pos: number) =>
    mem.set(mem.length === from.length ? from : from.subarray(pos, pos + mem.length));

  return {
    read(addr: bigint, len: number): Uint8Array | DmaFault {
      const out = new Uint8Array(len);
      const f = this.readInto(addr, out);
      return f === null ? out : f;
    },
    readInto(addr: bigint, dst: Uint8Array): DmaFault | null {
      into = dst;
      const r = access(addr, dst.length, false, copyOut);
      into = none; // not kept past the call
      return r;
    },
    writeWith(
      addr: bigint,
      len: number,
      fill: (dst: Uint8Array, pos: number) => void,
    ): DmaFault | null {
      return access(addr, len, true, fill);
    },
    write(addr: bigint, data: Uint8Array): DmaFault | null {
      from = data;
      const r = access(addr, data.length, true, copyIn);
      from = none;
      return r;
    },
  };
}
