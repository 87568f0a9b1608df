/**
 * The opcode table (io_uring/opdef.c io_issue_defs). The mirror implements
 * NOP, READV, WRITEV, FSYNC, READ_FIXED, WRITE_FIXED, TIMEOUT, TIMEOUT_REMOVE,
 * LINK_TIMEOUT, FILES_UPDATE, READ, WRITE and MSG_RING; every other opcode below IORING_OP_LAST fails its prep with
 * -EOPNOTSUPP, as the kernel does for an opcode it was built without
 * (io_eopnotsupp_prep), and is reported unsupported by IORING_REGISTER_PROBE.
 *
 * @module
 */

import { Errno } from "../uapi/errno.ts";
import { IORING_OP } from "../uapi/io_uring.ts";
import type { IoOpDef } from "./io_uring_types.ts";
import { ioMsgRing, ioMsgRingPrep } from "./msg_ring.ts";
import { ioNop, ioNopPrep } from "./nop.ts";
import { ioPrepRw, ioRw } from "./rw.ts";
import { ioFsync, ioFsyncPrep } from "./sync.ts";
import { ioFilesUpdate, ioFilesUpdatePrep } from "./rsrc.ts";
import {
  ioLinkTimeoutPrep,
  ioNoIssue,
  ioTimeout,
  ioTimeoutPrep,
  ioTimeoutRemove,
  ioTimeoutRemovePrep,
} from "./timeout.ts";

/** IORING_OP_LAST on Linux 6.18 (IORING_REGISTER_PROBE reports last_op 62, observed). */
export const IORING_OP_LAST = 63;

const rwDef = (name: string, bufferSelect: boolean): IoOpDef => ({
  name,
  needsFile: true,
  ioprio: true,
  bufferSelect,
  prep: ioPrepRw,
  issue: ioRw,
});

const noFile = (
  name: string,
  prep: IoOpDef["prep"],
  issue: IoOpDef["issue"],
): IoOpDef => ({ name, needsFile: false, ioprio: false, bufferSelect: false, prep, issue });

const implemented: Record<number, IoOpDef> = {
  [IORING_OP.NOP]: {
    name: "NOP",
    needsFile: false,
    ioprio: false,
    bufferSelect: false,
    prep: ioNopPrep,
    issue: ioNop,
  },
  [IORING_OP.READV]: rwDef("READV", true),
  [IORING_OP.WRITEV]: rwDef("WRITEV", false),
  [IORING_OP.FSYNC]: {
    name: "FSYNC",
    needsFile: true,
    ioprio: false,
    bufferSelect: false,
    prep: ioFsyncPrep,
    issue: ioFsync,
  },
  [IORING_OP.READ_FIXED]: rwDef("READ_FIXED", false),
  [IORING_OP.WRITE_FIXED]: rwDef("WRITE_FIXED", false),
  [IORING_OP.TIMEOUT]: noFile("TIMEOUT", ioTimeoutPrep, ioTimeout),
  [IORING_OP.TIMEOUT_REMOVE]: noFile("TIMEOUT_REMOVE", ioTimeoutRemovePrep, ioTimeoutRemove),
  [IORING_OP.LINK_TIMEOUT]: noFile("LINK_TIMEOUT", ioLinkTimeoutPrep, ioNoIssue),
  [IORING_OP.FILES_UPDATE]: noFile("FILES_UPDATE", ioFilesUpdatePrep, ioFilesUpdate),
  [IORING_OP.READ]: rwDef("READ", true),
  [IORING_OP.WRITE]: rwDef("WRITE", false),
  [IORING_OP.MSG_RING]: {
    name: "MSG_RING",
    needsFile: true,
    ioprio: false,
    bufferSelect: false,
    prep: ioMsgRingPrep,
    issue: ioMsgRing,
  },
};

const unsupported = (op: number): IoOpDef => ({
  name: `OP_${op}`,
  needsFile: false,
  ioprio: false,
  bufferSelect: false,
  prep: () => -Errno.EOPNOTSUPP,
  issue: () => -Errno.EOPNOTSUPP,
});

/** io_issue_defs[], indexed by opcode. */
export const IO_ISSUE_DEFS: readonly IoOpDef[] = Array.from(
  { length: IORING_OP_LAST },
  (_, op) => implemented[op] ?? unsupported(op),
);

/** io_uring_op_supported() */
export function ioUringOpSupported(op: number): boolean {
  return op < IORING_OP_LAST && implemented[op] !== undefined;
}
