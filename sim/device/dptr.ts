/**
 * The data pointer walk: turn a command's DPTR (PRP1/PRP2 or an SGL) into the
 * list of host memory segments the transfer touches, checking every rule the
 * specification puts on PRP entries and SGL descriptors, then move the data.
 * Nothing here touches host memory except through {@link DeviceDma}.
 *
 * Mirrors hw/nvme/ctrl.c: nvme_map_prp(), nvme_map_sgl(), nvme_map_sgl_data(),
 * nvme_map_dptr(), nvme_tx(). Section numbers are NVMe Base Spec 2.0:
 * 4.1.1 "Physical Region Page Entry and List", 4.1.2 "Scatter Gather List".
 *
 * @module
 */

import type { DeviceDma } from "./dma.ts";
import {
  decodeSglDescriptor,
  NVME_PSDT_PRP,
  NVME_PSDT_SGL_MPTR_CONTIG,
  NVME_PSDT_SGL_MPTR_SGL,
  NVME_SC,
  NVME_SGL_DESC_SIZE,
  NVME_SGL_SUBTYPE,
  NVME_SGL_TYPE,
  NVME_STATUS_DNR,
  nvmeCmdPsdt,
  type NvmeCommand,
  type SglDescriptor,
} from "./nvme_spec.ts";

/** One piece of host memory a transfer covers, in transfer order. */
export interface DataSegment {
  /** Bus address. */
  addr: bigint;
  /** Length in bytes. */
  len: number;
  /** An SGL Bit Bucket: the controller discards these bytes of read data. */
  bitBucket: boolean;
}

/** Bounds on an SGL walk (a limit on everything). */
export interface SglLimits {
  /** Most descriptors the controller processes for one command. */
  maxDescriptors: number;
  /** Most segments (Segment/Last Segment descriptors followed) per command. */
  maxSegments: number;
}

/** Default SGL bounds. */
export const DEFAULT_SGL_LIMITS: SglLimits = { maxDescriptors: 4096, maxSegments: 256 };

const U64_MAX = (1n << 64n) - 1n;

function dnr(sc: number): number {
  return sc | NVME_STATUS_DNR;
}

/**
 * nvme_map_prp(): walk PRP1/PRP2 for a `len`-byte transfer with memory page
 * size `pageSize` (CC.MPS). Returns the segments or an NVMe status.
 */
export function nvmeMapPrp(
  dma: DeviceDma,
  prp1: bigint,
  prp2: bigint,
  len: number,
  pageSize: number,
): DataSegment[] | number {
  if (len <= 0) throw new RangeError(`nvmeMapPrp: bad length ${len}`);
  const ps = BigInt(pageSize);
  const mask = ps - 1n;
  // 4.1.1, PRP Entry layout: bits 1:0 of every entry are 00b (dword aligned); a
  // controller may report PRP Offset Invalid when they are not.
  if (prp1 & 3n) return dnr(NVME_SC.PRP_INVALID_OFFSET);
  const segs: DataSegment[] = [];
  const firstLen = Math.min(len, Number(ps - (prp1 & mask)));
  segs.push({ addr: prp1, len: firstLen, bitBucket: false });
  let rem = len - firstLen;
  if (rem === 0) return segs;

  if (rem <= pageSize) {
    // 4.1.1: PRP2 is the second memory page; an entry other than the first has a zero offset.
    if (prp2 & mask) return dnr(NVME_SC.PRP_INVALID_OFFSET);
    segs.push({ addr: prp2, len: rem, bitBucket: false });
    return segs;
  }

  // 4.1.1: PRP2 is a PRP List pointer. It may carry an offset (the list starts
  // there), which must be dword aligned like any PRP entry.
  if (prp2 & 3n) return dnr(NVME_SC.PRP_INVALID_OFFSET);
  let listAddr = prp2;
  let nents = Number((ps - (prp2 & mask)) >> 3n); // entries left in this list page
  const maxLists = Math.ceil(len / pageSize) + 1; // bound on list pages followed
  let lists = 0;
  while (rem > 0) {
    if (++lists > maxLists) throw new Error("nvmeMapPrp: list walk did not terminate");
    const needed = Math.ceil(rem / pageSize);
    // The last entry of a list page chains to the next list page when more
    // than one entry remains to be described (4.1.1, PRP List).
    const chains = needed > nents;
    const count = chains ? nents : needed;
    if (count <= 0) throw new Error("nvmeMapPrp: empty PRP list page");
    const v = dma.readList(listAddr, count * 8);
    if (v === null) return NVME_SC.DATA_XFER_ERROR;
    const dataEntries = chains ? count - 1 : count;
    for (let i = 0; i < dataEntries; i++) {
      const ent = v.getBigUint64(i * 8, true);
      // 4.1.1: PRP List entries after the first PRP entry have a zero offset.
      if (ent & mask) return dnr(NVME_SC.PRP_INVALID_OFFSET);
      const n = Math.min(rem, pageSize);
      segs.push({ addr: ent, len: n, bitBucket: false });
      rem -= n;
    }
    if (chains) {
      const next = v.getBigUint64((count - 1) * 8, true);
      // 4.1.1: the pointer to the next PRP List page is page aligned.
      if (next & mask) return dnr(NVME_SC.PRP_INVALID_OFFSET);
      listAddr = next;
      nents = pageSize / 8;
    }
  }
  return segs;
}

/**
 * nvme_map_sgl_data(): map the data descriptors of one segment, consuming
 * `state.rem` bytes. Returns 0 or an NVMe status.
 */
function mapSglData(
  descs: Required<SglDescriptor>[],
  state: { rem: number; segs: DataSegment[] },
  isWrite: boolean,
): number {
  for (const d of descs) {
    switch (d.type) {
      case NVME_SGL_TYPE.DATA_BLOCK:
        break;
      case NVME_SGL_TYPE.BIT_BUCKET:
        // 4.1.2.1: a Bit Bucket only makes sense for data from the controller;
        // in a command that transfers data to the controller it is invalid.
        if (isWrite) return dnr(NVME_SC.SGL_INVALID_TYPE);
        break;
      case NVME_SGL_TYPE.SEGMENT:
      case NVME_SGL_TYPE.LAST_SEGMENT:
        // 4.1.2: a segment descriptor may only be the last descriptor of a segment.
        return dnr(NVME_SC.SGL_INVALID_COUNT);
      default:
        // Keyed and Transport Data Blocks are fabrics-only (SGLS bit 2 is 0).
        return dnr(NVME_SC.SGL_INVALID_TYPE);
    }
    const st = checkSubtype(d);
    if (st) return st;
    if (d.length === 0) continue;
    if (state.rem === 0) {
      // 4.1.2: SGL longer than the transfer; allowed only when SGLS bit 18
      // (excess length) is set, which this controller does not advertise.
      return dnr(NVME_SC.SGL_INVALID_DATA);
    }
    const n = Math.min(state.rem, d.length);
    if (d.type === NVME_SGL_TYPE.DATA_BLOCK && U64_MAX - d.addr < BigInt(d.length)) {
      return dnr(NVME_SC.SGL_INVALID_DATA);
    }
    state.segs.push({ addr: d.addr, len: n, bitBucket: d.type === NVME_SGL_TYPE.BIT_BUCKET });
    state.rem -= n;
  }
  return 0;
}

/**
 * 4.1.2.1, SGL Descriptor Sub Type: only the Address subtype exists on
 * PCIe. The Offset subtype addresses in-capsule data (fabrics, SGLS bit 20),
 * which this controller does not support: SGL Offset Invalid.
 */
function checkSubtype(d: Required<SglDescriptor>): number {
  if (d.subtype === NVME_SGL_SUBTYPE.ADDRESS) return 0;
  if (d.subtype === NVME_SGL_SUBTYPE.OFFSET) return dnr(NVME_SC.SGL_INVALID_OFFSET);
  return dnr(NVME_SC.SGL_INVALID_TYPE);
}

/**
 * nvme_map_sgl(): walk an SGL starting at the DPTR descriptor for a
 * `len`-byte transfer. Returns the segments or an NVMe status.
 */
export function nvmeMapSgl(
  dma: DeviceDma,
  first: Required<SglDescriptor>,
  len: number,
  isWrite: boolean,
  limits: SglLimits = DEFAULT_SGL_LIMITS,
): DataSegment[] | number {
  if (len <= 0) throw new RangeError(`nvmeMapSgl: bad length ${len}`);
  const state = { rem: len, segs: [] as DataSegment[] };
  let descriptors = 1;

  if (first.type === NVME_SGL_TYPE.DATA_BLOCK || first.type === NVME_SGL_TYPE.BIT_BUCKET) {
    // The whole transfer described by one descriptor in the command.
    const st = mapSglData([first], state, isWrite);
    if (st) return st;
  } else {
    let seg = first;
    let segments = 0;
    for (;;) {
      if (seg.type !== NVME_SGL_TYPE.SEGMENT && seg.type !== NVME_SGL_TYPE.LAST_SEGMENT) {
        return dnr(NVME_SC.SGL_INVALID_TYPE);
      }
      const sub = checkSubtype(seg);
      if (sub) return sub;
      // 4.1.2.1, SGL Segment descriptor: the length is a nonzero multiple of 16.
      if (seg.length === 0 || seg.length % NVME_SGL_DESC_SIZE !== 0) {
        return dnr(NVME_SC.SGL_INVALID_LAST);
      }
      if (U64_MAX - seg.addr < BigInt(seg.length)) return dnr(NVME_SC.SGL_INVALID_DATA);
      const nsgld = seg.length / NVME_SGL_DESC_SIZE;
      descriptors += nsgld;
      if (++segments > limits.maxSegments || descriptors > limits.maxDescriptors) {
        return dnr(NVME_SC.SGL_INVALID_COUNT);
      }
      const raw = dma.read(seg.addr, seg.length);
      if (raw === null) return NVME_SC.DATA_XFER_ERROR;
      const descs: Required<SglDescriptor>[] = [];
      for (let i = 0; i < nsgld; i++) descs.push(decodeSglDescriptor(raw, i * NVME_SGL_DESC_SIZE));
      const last = descs[nsgld - 1];
      if (last.type !== NVME_SGL_TYPE.SEGMENT && last.type !== NVME_SGL_TYPE.LAST_SEGMENT) {
        // The segment ends the list.
        const st = mapSglData(descs, state, isWrite);
        if (st) return st;
        break;
      }
      // 4.1.2: a Last Segment's descriptors are all data descriptors.
      if (seg.type === NVME_SGL_TYPE.LAST_SEGMENT) return dnr(NVME_SC.SGL_INVALID_LAST);
      const st = mapSglData(descs.slice(0, nsgld - 1), state, isWrite);
      if (st) return st;
      seg = last;
    }
  }
  // 4.1.2: the SGL describes less data than the command transfers.
  if (state.rem !== 0) return dnr(NVME_SC.SGL_INVALID_DATA);
  return state.segs;
}

/** What the controller supports for data pointers. */
export interface DptrCaps {
  /** CC.MPS memory page size in bytes. */
  pageSize: number;
  /** Whether SGLs are supported (Identify SGLS bits 1:0 nonzero). */
  sgls: boolean;
  /** SGL walk bounds. */
  sglLimits?: SglLimits;
}

/**
 * nvme_map_dptr(): select PRP or SGL by the command's PSDT and walk it.
 * Returns the segments or an NVMe status.
 */
export function nvmeMapDptr(
  dma: DeviceDma,
  cmd: NvmeCommand,
  len: number,
  isWrite: boolean,
  caps: DptrCaps,
): DataSegment[] | number {
  const psdt = nvmeCmdPsdt(cmd);
  switch (psdt) {
    case NVME_PSDT_PRP:
      return nvmeMapPrp(dma, cmd.prp1, cmd.prp2, len, caps.pageSize);
    case NVME_PSDT_SGL_MPTR_CONTIG:
    case NVME_PSDT_SGL_MPTR_SGL: {
      // 4.2 (Common Command Format, PSDT): SGLs only where Identify SGLS says so.
      if (!caps.sgls) return dnr(NVME_SC.INVALID_FIELD);
      const dptr = new Uint8Array(NVME_SGL_DESC_SIZE);
      const v = new DataView(dptr.buffer);
      v.setBigUint64(0, cmd.prp1, true);
      v.setBigUint64(8, cmd.prp2, true);
      return nvmeMapSgl(dma, decodeSglDescriptor(dptr), len, isWrite, caps.sglLimits);
    }
    default:
      // PSDT 11b is reserved.
      return dnr(NVME_SC.INVALID_FIELD);
  }
}

/**
 * nvme_tx() toward the device: read every segment of host memory into
 * `out` (exactly as long as the segments). Returns 0, or Data Transfer Error
 * on the first fault (the caller commits nothing).
 */
export function dmaFromHost(dma: DeviceDma, segs: DataSegment[], out: Uint8Array): number {
  let pos = 0;
  for (const s of segs) {
    if (s.bitBucket) throw new Error("dmaFromHost: bit bucket in a host-to-device transfer");
    if (pos + s.len > out.length) {
      throw new Error(`dmaFromHost: segments exceed the ${out.length}-byte transfer`);
    }
    if (!dma.readInto(s.addr, out.subarray(pos, pos + s.len))) return NVME_SC.DATA_XFER_ERROR;
    pos += s.len;
  }
  if (pos !== out.length) {
    throw new Error(`dmaFromHost: segments cover ${pos} of ${out.length} bytes`);
  }
  return 0;
}

/**
 * nvme_tx() toward the host: scatter `data` over the segments, skipping bit
 * buckets. Returns 0 or Data Transfer Error on the first fault.
 */
export function dmaToHost(dma: DeviceDma, segs: DataSegment[], data: Uint8Array): number {
  let pos = 0;
  for (const s of segs) {
    if (!s.bitBucket && !dma.write(s.addr, data.subarray(pos, pos + s.len))) {
      return NVME_SC.DATA_XFER_ERROR;
    }
    pos += s.len;
  }
  if (pos !== data.length) throw new Error(`dmaToHost: segments cover ${pos} of ${data.length}`);
  return 0;
}

/**
 * nvme_tx() toward the host from a source that fills host memory in place
 * (the media, with no controller buffer between): `fill(dst, pos)` writes
 * the transfer's bytes from `pos` into `dst`. The same accesses, counts and
 * faults as {@link dmaToHost} over the same bytes.
 */
export function dmaToHostFrom(
  dma: DeviceDma,
  segs: DataSegment[],
  len: number,
  fill: (dst: Uint8Array, pos: number) => void,
): number {
  let pos = 0;
  for (const s of segs) {
    if (!s.bitBucket) {
      const base = pos;
      if (!dma.writeWith(s.addr, s.len, (dst, at) => fill(dst, base + at))) {
        return NVME_SC.DATA_XFER_ERROR;
      }
    }
    pos += s.len;
  }
  if (pos !== len) throw new Error(`dmaToHost: segments cover ${pos} of ${len}`);
  return 0;
}
