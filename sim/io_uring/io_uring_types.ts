/**
 * The shared shapes of the io_uring mirror (io_uring/io_uring_types.h):
 * a request (`struct io_kiocb`), what an opcode provides (`struct
 * io_issue_def`), and the ring context the opcodes may use.
 *
 * @module
 */

import type { File } from "../fs/file.ts";
import type { FdTable } from "../fs/fdtable.ts";
import type { Kernel } from "../kernel.ts";
import { Errno } from "../uapi/errno.ts";
import type { SqeFields } from "../uapi/io_uring.ts";
import type { FileTable } from "./filetable.ts";
import type { BufTable } from "./rsrc.ts";

/** An issue handler's answer meaning "completes later through completeReq()". */
export const IOU_ISSUE_QUEUED = -Errno.EIOCBQUEUED;

/** struct io_kiocb: one request from one SQE. */
export interface IoKiocb {
  /** The ring. */
  readonly ctx: IoRingCtx;
  /** The SQE as copied at submission (IORING_FEAT_SUBMIT_STABLE). */
  readonly sqe: Readonly<Required<SqeFields>>;
  /** IOSQE_* flags (a drain inside a link marks the link's head). */
  flags: number;
  /** Submission sequence number (SQEs consumed before this one). */
  readonly seq: number;
  /** The file, assigned at issue (or null for opcodes without one). */
  file: File | null;
  /** cqe.res: for read/write the expected byte count until completion. */
  res: number;
  /** cqe.flags */
  cflags: number;
  /** REQ_F_FAIL: a failure that breaks a (soft) link chain. */
  failed: boolean;
  /** REQ_F_CQE_SKIP: post no CQE (IOSQE_CQE_SKIP_SUCCESS until req_set_fail clears it). */
  cqeSkip: boolean;
  /** REQ_F_SKIP_LINK_CQES: a failed CQE_SKIP_SUCCESS request; the links it fails post nothing. */
  skipLinkCqes: boolean;
  /** REQ_F_ARM_LTIMEOUT: the next link is a LINK_TIMEOUT, armed when this request is issued. */
  armLtimeout: boolean;
  /** REQ_F_LINK_TIMEOUT: a LINK_TIMEOUT guards this request (disarmed when it completes). */
  linkTimeout: boolean;
  /** req->file_node: the fixed-file table node this request holds a reference on. */
  fileNode: RsrcNodeRef | null;
  /** The next request of its link chain. */
  link: IoKiocb | null;
  /** Undo what issue acquired (buffer and tag references), run once at free, given the request. */
  cleanup: ((req: IoKiocb) => void) | null;
  /** The completion has been posted (or skipped). */
  done: boolean;
  /** Per-opcode state from prep. */
  op: unknown;
  /** The ring's list of requests in flight, in submission order: the previous one. */
  inflightPrev: IoKiocb | null;
  /** The next one on that list. */
  inflightNext: IoKiocb | null;
}

/** A resource node a request can hold (struct io_rsrc_node: its reference is put at free). */
export interface RsrcNodeRef {
  /** io_put_rsrc_node(): drop the reference; the last one posts the tag CQE and frees. */
  put(): void;
}

/** struct io_issue_def + io_cold_def: one opcode. */
export interface IoOpDef {
  /** Opcode name, as in io_uring/opdef.c. */
  readonly name: string;
  /** needs_file */
  readonly needsFile: boolean;
  /** ioprio: the opcode accepts a nonzero sqe->ioprio. */
  readonly ioprio: boolean;
  /** buffer_select */
  readonly bufferSelect: boolean;
  /** prep: validate the SQE; 0 or -errno. */
  prep(req: IoKiocb): number;
  /** issue: a result now, or {@link IOU_ISSUE_QUEUED} and `ctx.completeReq()` later. */
  issue(req: IoKiocb): number;
}

/** What the opcodes see of the ring. */
export interface IoRingCtx {
  /** The host. */
  readonly kernel: Kernel;
  /** The process fd table (non-fixed files). */
  readonly fdt: FdTable;
  /** Fixed files. */
  readonly fileTable: FileTable;
  /** Registered buffers. */
  readonly bufTable: BufTable;
  /** IORING_SETUP_* flags. */
  readonly setupFlags: number;
  /** Complete a request that was queued (ki_complete path). */
  completeReq(req: IoKiocb, res: number): void;
  /** io_post_aux_cqe(): post a CQE not tied to a request (overflowing if full). */
  postAuxCqe(userData: bigint, res: number, cflags: number): void;
}
