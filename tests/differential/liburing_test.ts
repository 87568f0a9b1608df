/**
 * liburing's regression tests as a peer suite (issue 10, point 4): for each
 * of test/link.c, hardlink.c, skip-cqe.c, cq-overflow.c, cq-full.c, defer.c,
 * file-register.c, file-update.c, fixed-link.c and rsrc_tags.c, the
 * behaviours it asserts, written as differential cases: each runs on the sim
 * mirror and on the live kernel, and every register result, submit result,
 * CQE (by the step that queued it, ordered where the test depends on order),
 * buffer and file must agree. The cases are our own; what each liburing test
 * asserts, and which parts are not covered and why, is listed in README
 * ("liburing's tests as a peer suite").
 *
 * Durations are milliseconds, not liburing's seconds, and timers that liburing
 * starts with equal expiries get distinct ones here where the outcome would
 * otherwise depend on whether both fire in one timer interrupt (see the
 * LINK_TIMEOUT case that pins that race down on purpose).
 */

import assert from "node:assert/strict";
import { realBackendUnavailable } from "../../mod.ts";
import { IORING_TIMEOUT, IOSQE } from "../../sim/uapi/io_uring.ts";
import { IORING_NOP } from "../../sim/io_uring/nop.ts";
import { BUF_BYTES, FLAGS, runDifferential, type Step, type Ts } from "./engine.ts";

const why = realBackendUnavailable();
if (why) console.log(`SKIP liburing peer suite: real backend unavailable: ${why}`);

/** Operations each liburing test's cases ran (for README's figures). */
export const LIBURING_CASES: { test: string; name: string; steps: number }[] = [];

function peer(
  test: string,
  name: string,
  steps: Step[],
  entries = 16,
  cqEntries?: number,
): void {
  LIBURING_CASES.push({ test, name, steps: steps.length });
  Deno.test({
    name: `liburing ${test}: ${name}`,
    ignore: why !== null,
    fn() {
      const m = runDifferential(steps, entries, undefined, cqEntries);
      assert.equal(m, null, m ? `step ${m.step} (${m.what}): sim=${m.sim} real=${m.real}` : "");
    },
  });
}

type Sqe = Extract<Step, { t: "sqe" }>;
const L = IOSQE.IO_LINK;
const HL = IOSQE.IO_HARDLINK;
const SKIP = IOSQE.CQE_SKIP_SUCCESS;
const ms = (m: number): Ts => ({ sec: 0, nsec: m * 1e6 });
const nop = (flags = 0): Step => ({ t: "sqe", op: "nop", flags });
/** A NOP that fails at issue with `res` (IORING_NOP_INJECT_RESULT). */
const failNop = (res: number, flags = 0): Step => ({
  t: "sqe",
  op: "nop",
  flags,
  raw: { rwFlags: IORING_NOP.INJECT_RESULT, len: res >>> 0 },
});
/** A NOP that fails at prep (-EINVAL: an unknown nop flag). */
const badNop = (flags = 0): Step => ({ t: "sqe", op: "nop", flags, raw: { rwFlags: 1 << 8 } });
const timeout = (t: Ts, flags = 0, extra: Partial<Sqe> = {}): Step => ({
  t: "sqe",
  op: "timeout",
  ts: t,
  flags,
  ...extra,
});
const linkTimeout = (t: Ts, flags = 0, extra: Partial<Sqe> = {}): Step => ({
  t: "sqe",
  op: "linkTimeout",
  ts: t,
  flags,
  ...extra,
});
/** A write that is accepted at submission and fails at execution (-EFAULT: a NULL buffer). */
const execFail = (flags = 0): Step => ({
  t: "sqe",
  op: "write",
  file: { fd: 0 },
  range: { buf: 0, off: 0, len: 100 },
  flags,
  raw: { addr: 0n },
});
const drain = (expect?: number): Step => ({ t: "drainOrdered", expect });
const openScratch: Step[] = [
  { t: "open", file: 0, flags: FLAGS.rwCreate },
  { t: "open", file: 1, flags: FLAGS.rwCreate },
  { t: "open", file: 2, flags: FLAGS.rwCreateDirect },
];

// ---------------------------------------------------------------- test/link.c

peer("link.c", "single link, double link, two independent chains", [
  nop(L),
  nop(),
  drain(),
  nop(L),
  nop(L),
  nop(),
  drain(),
  nop(L),
  nop(),
  nop(L),
  nop(),
  drain(),
]);

peer("link.c", "a failed head cancels its dependent (-ECANCELED), in CQ order", [
  failNop(-2, L),
  nop(),
  drain(),
  failNop(-2, L),
  nop(L),
  nop(),
  drain(),
]);

peer("link.c", "hard links: TIMEOUT -> NOP, TIMEOUT -> TIMEOUT -> NOP run on after -ETIME", [
  timeout(ms(10), L | HL),
  nop(),
  drain(),
  timeout(ms(10), L | HL),
  timeout(ms(15), L | HL),
  nop(),
  drain(),
]);

peer("link.c", "an early failure in a link does not hang submit-and-wait", [
  ...openScratch,
  { t: "sqe", op: "readv", file: { rawFd: 4242 }, iov: [], flags: L },
  nop(),
  { t: "submit", wait: 2 },
]);

// ----------------------------------------------------------- test/skip-cqe.c

const skipChain = (nr: number, skipLast: boolean): Step[] =>
  Array.from({ length: nr }, (_, i) => nop(i !== nr - 1 || skipLast ? L | SKIP : 0));
peer("skip-cqe.c", "successful links post only the last CQE (or none)", [
  ...skipChain(1, false),
  drain(1),
  ...skipChain(1, true),
  drain(0),
  ...skipChain(6, false),
  drain(1),
  ...skipChain(6, true),
  drain(0),
]);

const failChain = (nr: number, failIdx: number): Step[] =>
  Array.from({ length: nr }, (_, i) => {
    const f = i !== nr - 1 ? L | SKIP : 0;
    return i === failIdx ? execFail(f) : nop(f);
  });
peer("skip-cqe.c", "a failure in a skip chain posts that CQE alone", [
  ...openScratch,
  ...failChain(6, 3),
  drain(1),
  ...failChain(6, 5),
  drain(1),
]);

/** skip-cqe.c's ltimeout_cancel: a skip chain with a LINK_TIMEOUT after member `toutIdx`. */
function ltimeoutCancel(nr: number, toutIdx: number, async: boolean, failIdx: number): Step[] {
  const out: Step[] = [];
  for (let i = 0; i < nr; i++) {
    let f = L | (async ? IOSQE.ASYNC : 0);
    if (i !== nr - 1) f |= SKIP;
    out.push(i === failIdx ? execFail(f) : nop(f));
    if (i === toutIdx) out.push(linkTimeout({ sec: 1, nsec: 0 }, L | SKIP));
  }
  return [...out, drain(1)];
}
for (const async of [false, true]) {
  peer(
    "skip-cqe.c",
    `linked timeouts disarmed inside skip chains post nothing${async ? " (IOSQE_ASYNC)" : ""}`,
    [
      ...openScratch,
      ...ltimeoutCancel(1, 0, async, -1),
      ...ltimeoutCancel(6, 3, async, -1),
      ...ltimeoutCancel(6, 5, async, -1),
      ...ltimeoutCancel(6, 3, async, 3),
      ...ltimeoutCancel(6, 3, async, 2),
      ...ltimeoutCancel(6, 3, async, 4),
    ],
  );
}

// ltimeout_fire: liburing blocks a read on an empty pipe; the mirror has no pipes, so a
// 100 ms TIMEOUT is the request that cannot finish before its 1 ms linked timeout.
for (let i = 0; i < 8; i++) {
  const async = (i & 1) !== 0;
  const skipMain = (i & 2) !== 0;
  const skipTout = (i & 4) !== 0;
  peer(
    "skip-cqe.c",
    `a linked timeout that fires cancels the request (async ${async}, skip main ${skipMain}, ` +
      `skip timeout ${skipTout})`,
    [
      timeout(ms(100), L | (async ? IOSQE.ASYNC : 0) | (skipMain ? SKIP : 0)),
      linkTimeout(ms(1), skipTout ? SKIP : 0),
      drain(skipTout ? 1 : 2),
    ],
  );
}

/** skip-cqe.c's test_hardlink: 7 hard-linked NOPs, one failing, one skipping. */
function hardlinkSkip(failIdx: number, skipIdx: number, hardlinkLast: boolean): Step[] {
  const out: Step[] = [];
  for (let i = 0; i < 7; i++) {
    let f = i !== 6 || hardlinkLast ? HL : 0;
    if (i === skipIdx) f |= SKIP;
    out.push(i === failIdx ? execFail(f) : nop(f));
  }
  return [...out, drain(skipIdx === failIdx ? 7 : 6)];
}
for (let fail = 0; fail < 3; fail++) {
  peer("skip-cqe.c", `hard links with a failure at ${fail * 3} and a skip at 0/3/6`, [
    ...openScratch,
    ...[0, 1, 2].flatMap((skip) =>
      [false, true].flatMap((last) => hardlinkSkip(fail * 3, skip * 3, last))
    ),
  ]);
}

// --------------------------------------------------------- test/cq-overflow.c

peer("cq-overflow.c", "16 NOPs on a 4-entry ring: 8 overflow, none lost, all in order", [
  ...[0, 1, 2, 3].flatMap(() => [nop(), nop(), nop(), nop(), { t: "enter" } as Step]),
  { t: "ringState" },
  { t: "reapOrdered", max: 64 },
  { t: "enter" },
  { t: "ringState" },
  { t: "reapOrdered", max: 64 },
  { t: "ringState" },
], 4);

peer(
  "cq-overflow.c",
  "overflow handling: 8 NOPs one per submit on a CQ of 2, fair order",
  [
    ...Array.from({ length: 8 }, () => [nop(), { t: "enter" } as Step]).flat(),
    { t: "ringState" },
    ...Array.from(
      { length: 6 },
      () => [{ t: "reapOrdered", max: 2 } as Step, { t: "enter" } as Step],
    )
      .flat(),
    { t: "ringState" },
  ],
  2,
  2,
);

peer("cq-overflow.c", "timeouts that fire into a full CQ overflow; a NOP is still accepted", [
  ...[0, 1, 2, 3].flatMap(() => [
    timeout(ms(10), 0, { count: 0xffffffff }),
    timeout(ms(10), 0, { count: 0xffffffff }),
    timeout(ms(10), 0, { count: 0xffffffff }),
    timeout(ms(10), 0, { count: 0xffffffff }),
    { t: "enter" } as Step,
  ]),
  { t: "sleep", ms: 40 },
  { t: "ringState" },
  nop(),
  { t: "enter" },
  { t: "ringState" },
  { t: "reapOrdered", max: 64 },
  { t: "enter" },
  { t: "reapOrdered", max: 64 },
  { t: "ringState" },
], 4);

peer("cq-overflow.c", "O_DIRECT readvs one per submit, one with a NULL iovec (-EFAULT)", [
  ...openScratch,
  { t: "fill", buf: 0, seed: 5 },
  { t: "sqe", op: "write", file: { fd: 2 }, range: { buf: 0, off: 0, len: BUF_BYTES }, pos: 0 },
  { t: "drain" },
  ...Array.from({ length: 32 }, (_, i) => [
    {
      t: "sqe",
      op: "readv",
      file: { fd: 2 },
      iov: [{ buf: 1 + (i % 3), off: 4096 * (i % 16), len: 4096 }],
      pos: 4096 * ((i * 7) % 16),
      raw: i === 12 ? { addr: 0n } : {},
    } as Step,
    { t: "enter" } as Step,
  ]).flat(),
  { t: "ringState" },
  { t: "drain" },
  { t: "ringState" },
], 8);

// ------------------------------------------------------------ test/cq-full.c

peer("cq-full.c", "12 NOPs on a 4-entry ring: NODROP keeps all 12, cq_overflow stays 0", [
  ...[0, 1, 2].flatMap(() => [nop(), nop(), nop(), nop(), { t: "enter" } as Step]),
  { t: "ringState" },
  { t: "reapOrdered", max: 64 },
  { t: "enter" },
  { t: "reapOrdered", max: 64 },
  { t: "ringState" },
], 4);

// -------------------------------------------------------------- test/defer.c

peer("defer.c", "100 linked NOPs complete in order (cancelled_userdata, on a plain ring)", [
  ...Array.from({ length: 100 }, () => nop(L)),
  drain(100),
], 128);

peer("defer.c", "a chain whose head fails at prep: -EINVAL, then 99 x -ECANCELED", [
  badNop(L),
  ...Array.from({ length: 99 }, () => nop(L)),
  drain(100),
], 128);

peer("defer.c", "drained NOPs complete although sq_dropped was written (dropped_hung)", [
  { t: "setSqDropped", n: 1000 },
  ...Array.from({ length: 10 }, () => nop(IOSQE.IO_DRAIN)),
  drain(10),
  { t: "ringState" },
]);

peer("defer.c", "drained TIMEOUTs each guarded by a LINK_TIMEOUT (drain_with_linked_timeout)", [
  timeout(ms(10), L | IOSQE.IO_DRAIN),
  linkTimeout(ms(30)),
  timeout(ms(10), L | IOSQE.IO_DRAIN),
  linkTimeout(ms(30)),
  timeout(ms(10), L | IOSQE.IO_DRAIN),
  linkTimeout(ms(30)),
  drain(6),
]);

// ------------------------------------------------------ test/file-register.c

const files = (n: number, f: number | -1 = 0): number[] => new Array(n).fill(f);
peer("file-register.c", "basic, many, sparse registrations; a bad fd fails the set", [
  ...openScratch,
  { t: "regFiles", files: files(100) },
  { t: "unregFiles" },
  { t: "regFiles", files: [...files(10), { raw: 9999 }, ...files(89)] },
  { t: "unregFiles" },
  { t: "regFiles", files: files(768) },
  { t: "unregFiles" },
  { t: "regFiles", files: [...files(100), ...files(100, -1)] },
  { t: "unregFiles" },
  { t: "regFiles", files: files(8192, -1) },
  { t: "updFiles", offset: 7193, files: [1] },
  { t: "unregFiles" },
]);

peer("file-register.c", "additions, removals, replace, replace all, grow, shrink, zero", [
  ...openScratch,
  { t: "regFiles", files: [...files(100), ...files(100, -1)] },
  { t: "updFiles", offset: 100, files: [1, 1] },
  { t: "unregFiles" },
  { t: "regFiles", files: files(100) },
  { t: "updFiles", offset: 50, files: files(10, -1) },
  { t: "updFiles", offset: 90, files: files(10, 1) },
  { t: "updFiles", offset: 0, files: files(100, -1) },
  { t: "unregFiles" },
  { t: "regFiles", files: [...files(50), ...files(250, -1)] },
  ...[50, 150, 299, 300].map((o) => ({ t: "updFiles", offset: o, files: [1] }) as Step),
  { t: "unregFiles" },
  { t: "regFiles", files: files(50) },
  ...[0, 25, 49, 50].map((o) => ({ t: "updFiles", offset: o, files: [-1] }) as Step),
  { t: "unregFiles" },
  { t: "regFiles", files: files(10, -1) },
  { t: "updFiles", offset: 0, files: [1] },
  { t: "unregFiles" },
]);

peer("file-register.c", "fixed-file I/O through an updated slot, a skipped slot, a sparse set", [
  ...openScratch,
  { t: "fill", buf: 0, seed: 0, byte: 0x5a },
  { t: "regFiles", files: files(100) },
  { t: "updFiles", offset: 90, files: [-2] },
  { t: "sqe", op: "writev", file: { slot: 90 }, iov: [{ buf: 0, off: 0, len: 4096 }], pos: 0 },
  { t: "drain" },
  { t: "sqe", op: "readv", file: { slot: 90 }, iov: [{ buf: 1, off: 0, len: 4096 }], pos: 0 },
  { t: "drain" },
  { t: "unregFiles" },
  { t: "regFiles", files: files(256, -1) },
  ...[0, 128, 255].map((o) => ({ t: "updFiles", offset: o, files: [1] }) as Step),
  { t: "sqe", op: "writev", file: { slot: 255 }, iov: [{ buf: 0, off: 0, len: 4096 }], pos: 0 },
  { t: "sqe", op: "readv", file: { slot: 254 }, iov: [{ buf: 1, off: 0, len: 4096 }], pos: 0 },
  { t: "drain" },
  { t: "unregFiles" },
  { t: "regFiles", files: files(256, 1) },
  ...[0, 128, 255].map((o) => ({ t: "updFiles", offset: o, files: [-1] }) as Step),
  { t: "unregFiles" },
]);

peer("file-register.c", "slots removed while a hard-linked write waits behind a TIMEOUT", [
  ...openScratch,
  { t: "regFiles", files: [0, 1] },
  { t: "close", file: 0 },
  { t: "close", file: 1 },
  timeout(ms(30), L | HL),
  { t: "sqe", op: "write", file: { slot: 1 }, range: { buf: 0, off: 0, len: 128 }, pos: 0 },
  { t: "enter" },
  { t: "updFiles", offset: 0, files: [-1] },
  { t: "updFiles", offset: 1, files: [-1] },
  drain(2),
]);

// -------------------------------------------------------- test/file-update.c

peer("file-update.c", "three rings register, update and unregister the same files", [
  ...openScratch,
  { t: "ring", ring: 1, entries: 8 },
  { t: "ring", ring: 2, entries: 8 },
  ...[true, false].flatMap((unreg) => [
    ...[0, 1, 2].map((r) => ({ t: "regFiles", files: files(10), ring: r }) as Step),
    ...[0, 1, 2].map((r) => ({ t: "updFiles", offset: 0, files: files(10, 1), ring: r }) as Step),
    ...(unreg ? [0, 1, 2].map((r) => ({ t: "unregFiles", ring: r }) as Step) : []),
  ]),
]);

peer(
  "file-update.c",
  "IORING_OP_FILES_UPDATE removes 10 slots by SQE; allocation writes slots back",
  [
    ...openScratch,
    { t: "regFiles", files: files(10) },
    { t: "sqe", op: "filesUpdate", files: files(10, -1), offset: 0 },
    drain(1),
    { t: "sqe", op: "filesUpdate", files: [1, 2], offset: 0xffffffff },
    drain(1),
    { t: "sqe", op: "filesUpdate", files: [1], offset: 10 },
    { t: "sqe", op: "filesUpdate", files: [], offset: 0 },
    { t: "sqe", op: "filesUpdate", files: [1], offset: 0, flags: IOSQE.FIXED_FILE },
    drain(3),
    { t: "unregFiles" },
    { t: "sqe", op: "filesUpdate", files: [1], offset: 0 },
    { t: "sqe", op: "filesUpdate", files: [1], offset: 0xffffffff },
    drain(2),
  ],
);

// --------------------------------------------------------- test/fixed-link.c

peer("fixed-link.c", "two READ_FIXED, the first linked, each reads its length", [
  ...openScratch,
  { t: "fill", buf: 0, seed: 11 },
  { t: "sqe", op: "write", file: { fd: 0 }, range: { buf: 0, off: 0, len: 4096 }, pos: 0 },
  { t: "drain" },
  { t: "regBufs", bufs: [{ buf: 1, off: 0, len: 64 }, { buf: 2, off: 0, len: 64 }] },
  {
    t: "sqe",
    op: "readFixed",
    file: { fd: 0 },
    range: { buf: 1, off: 0, len: 18 },
    bufIndex: 0,
    flags: L,
  },
  { t: "sqe", op: "readFixed", file: { fd: 0 }, range: { buf: 2, off: 0, len: 18 }, bufIndex: 1 },
  { t: "submit", wait: 2 },
]);

// ---------------------------------------------------------- test/rsrc_tags.c

const tags = (n: number, base = 1000): number[] => Array.from({ length: n }, (_, i) => base + i);
const B = (buf: number): { buf: number; off: number; len: number } => ({ buf, off: 0, len: 1024 });
peer("rsrc_tags.c", "files: an update posts the old tag, tag 0 posts nothing, removal twice once", [
  ...openScratch,
  { t: "regFiles", files: files(50), tags: tags(50) },
  { t: "updFiles", offset: 0, files: [0], tags: [666] },
  { t: "reapAll" },
  { t: "updFiles", offset: 0, files: [0], tags: [0] },
  { t: "reapAll" },
  { t: "updFiles", offset: 0, files: [0], tags: [1] },
  { t: "reapAll" },
  { t: "updFiles", offset: 5, files: [-1] },
  { t: "reapAll" },
  { t: "updFiles", offset: 5, files: [-1] },
  { t: "reapAll" },
  { t: "updFiles", offset: 6, files: [-1], tags: [1] },
  { t: "updFiles", offset: 6, files: [-2], tags: [1] },
  { t: "reapAll" },
  { t: "unregFiles" },
  { t: "reapAll" },
]);

peer("rsrc_tags.c", "buffers: the same tag rules; tags and sparse slots", [
  { t: "regBufs", bufs: [B(0), B(0), B(0), B(0), B(0)], tags: tags(5) },
  { t: "updBufs", offset: 0, bufs: [B(0)], tags: [666] },
  { t: "reapAll" },
  { t: "updBufs", offset: 0, bufs: [B(0)], tags: [0] },
  { t: "reapAll" },
  { t: "updBufs", offset: 0, bufs: [B(1)], tags: [1] },
  { t: "reapAll" },
  { t: "updBufs", offset: 1, bufs: [null], tags: [7] },
  { t: "updBufs", offset: 1, bufs: [null] },
  { t: "reapAll" },
  { t: "unregBufs" },
  { t: "reapAll" },
  { t: "regBufs", bufs: [B(0), null], tags: [1, 2] },
  { t: "regBufs", bufs: [B(0), B(1)], tags: [0, 5] },
  { t: "unregBufs" },
  { t: "reapAll" },
]);

peer("rsrc_tags.c", "buffers: empty to buffer, buffer to empty, zero to zero, (NULL, 1) fails", [
  ...openScratch,
  {
    t: "regBufs",
    bufs: [{ buf: 0, off: 0, len: 10 }, null, null, null, null],
    tags: [0, 0, 0, 0, 0],
  },
  { t: "updBufs", offset: 1, bufs: [{ buf: 0, off: 0, len: 10 }] },
  { t: "updBufs", offset: 0, bufs: [null] },
  { t: "updBufs", offset: 2, bufs: [null] },
  { t: "updBufs", offset: 3, bufs: [{ addr: 0n, len: 1 }] },
  { t: "sqe", op: "readFixed", file: { fd: 0 }, range: { buf: 0, off: 0, len: 10 }, bufIndex: 2 },
  { t: "sqe", op: "readFixed", file: { fd: 0 }, range: { buf: 0, off: 0, len: 0 }, bufIndex: 2 },
  drain(2),
]);

peer("rsrc_tags.c", "default registration: updates and unregister post no tag CQE", [
  ...openScratch,
  { t: "regFiles", files: files(50) },
  { t: "updFiles", offset: 0, files: [-1] },
  { t: "sleep", ms: 5 },
  { t: "reapAll" },
  { t: "unregFiles" },
  { t: "reapAll" },
]);

peer(
  "rsrc_tags.c",
  "a write queued behind a TIMEOUT takes its slot at issue; the old tag posts now",
  [
    ...openScratch,
    { t: "regFiles", files: [0, 1], tags: [1000, 1001] },
    timeout(ms(20), L | HL),
    { t: "sqe", op: "write", file: { slot: 1 }, range: { buf: 0, off: 0, len: 512 }, pos: 0 },
    { t: "enter" },
    { t: "updFiles", offset: 1, files: [0], tags: [1002] },
    { t: "reapAll" },
    drain(2),
    { t: "unregFiles" },
    { t: "reapAll" },
  ],
);

// ----------------------------------------------- timeout.c behaviours the above rely on

{
  const st: Step[] = [
    timeout(ms(10)),
    drain(1),
    nop(),
    nop(),
    timeout(ms(500), 0, { count: 1 }),
    drain(3),
    timeout(ms(500), 0, { count: 2 }),
    nop(),
    drain(2),
    nop(),
    drain(1),
    timeout(ms(10), 0, { count: 3, tflags: IORING_TIMEOUT.MULTISHOT }),
    drain(3),
    timeout({ sec: 0, nsec: 15e6, abs: true }, 0, { tflags: IORING_TIMEOUT.ABS }),
    drain(1),
    timeout({ sec: 0, nsec: 15e6, abs: true }, 0, {
      tflags: IORING_TIMEOUT.ABS | IORING_TIMEOUT.BOOTTIME,
    }),
    drain(1),
    timeout({ sec: 0, nsec: 15e6, abs: true }, 0, {
      tflags: IORING_TIMEOUT.ABS | IORING_TIMEOUT.REALTIME,
    }),
    drain(1),
  ];
  const removed = st.push(timeout(ms(500))) - 1;
  st.push({ t: "sqe", op: "timeoutRemove", target: removed }, drain(2));
  st.push({ t: "sqe", op: "timeoutRemove", target: removed }, drain(1));
  const updated = st.push(timeout(ms(500))) - 1;
  st.push(
    { t: "sqe", op: "timeoutRemove", target: updated, tflags: IORING_TIMEOUT.UPDATE, ts: ms(5) },
    drain(2),
  );
  st.push(
    timeout(ms(10), L, { tflags: IORING_TIMEOUT.ETIME_SUCCESS }),
    nop(),
    drain(2),
    timeout(ms(10), L | SKIP, { tflags: IORING_TIMEOUT.ETIME_SUCCESS }),
    nop(),
    drain(1),
  );
  peer("(timeouts)", "counted, pure and multishot timeouts; removal; update; absolute", st);
}

peer("(timeouts)", "LINK_TIMEOUT: disarmed, firing, racing an equal TIMEOUT, and bad uses", [
  nop(L),
  linkTimeout(ms(10)),
  drain(2),
  timeout(ms(10), L),
  linkTimeout(ms(40)),
  drain(2),
  timeout(ms(40), L),
  linkTimeout(ms(10), L),
  nop(),
  drain(3),
  // Equal expiries: both timers fire before task work runs, so the linked timeout finds
  // nothing left to cancel (-ENOENT) on the kernel, and the mirror models exactly that.
  timeout(ms(10), L),
  linkTimeout(ms(10)),
  drain(2),
  linkTimeout(ms(10)),
  drain(1),
  nop(L),
  linkTimeout(ms(10), L),
  linkTimeout(ms(10)),
  drain(3),
  nop(L),
  linkTimeout(ms(10), 0, { count: 1 }),
  drain(2),
]);

peer("(timeouts)", "timeout SQE fields: len, buf_index, flags, clocks, bad timespecs", [
  timeout(ms(1), 0, { raw: { len: 2 } }),
  timeout(ms(1), 0, { raw: { bufIndex: 1 } }),
  timeout(ms(1), 0, { raw: { fileIndex: 1 } }),
  timeout(ms(1), 0, { tflags: 1 << 7 }),
  drain(4),
  timeout(ms(1), 0, { tflags: IORING_TIMEOUT.BOOTTIME | IORING_TIMEOUT.REALTIME }),
  timeout(ms(1), 0, { tflags: IORING_TIMEOUT.MULTISHOT | IORING_TIMEOUT.ABS }),
  timeout({ sec: -1, nsec: 0 }),
  timeout({ sec: 0, nsec: -1 }),
  drain(4),
  timeout(ms(1), 0, { raw: { addr: 0n } }),
  timeout(ms(1), 0, { raw: { ioprio: 1 } }),
  timeout(ms(1), IOSQE.FIXED_FILE),
  { t: "sqe", op: "timeoutRemove", target: 0, raw: { len: 1 } },
  drain(4),
  { t: "sqe", op: "timeoutRemove", target: 0, flags: IOSQE.FIXED_FILE },
  { t: "sqe", op: "timeoutRemove", target: 0, tflags: IORING_TIMEOUT.ABS },
  {
    t: "sqe",
    op: "timeoutRemove",
    target: 0,
    tflags: IORING_TIMEOUT.UPDATE | IORING_TIMEOUT.REALTIME,
    ts: ms(1),
  },
  { t: "sqe", op: "timeoutRemove", target: 0, tflags: IORING_TIMEOUT.UPDATE },
  drain(4),
], 32);

peer("(timeouts)", "an unlimited multishot TIMEOUT ends when its CQE finds the CQ ring full", [
  timeout(ms(1), 0, { tflags: IORING_TIMEOUT.MULTISHOT }),
  { t: "enter" },
  { t: "sleep", ms: 40 },
  { t: "ringState" },
  { t: "reapOrdered", max: 64 },
  { t: "enter" },
  { t: "reapOrdered", max: 64 },
  { t: "ringState" },
], 2);
