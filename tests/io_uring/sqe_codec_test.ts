import assert from "node:assert/strict";
import { decodeSqe, encodeSqe, IORING_OP } from "../../sim/uapi/io_uring.ts";

Deno.test("decodeSqe: an SQE round-trips, and a view shorter than 64 bytes is refused, not read past", () => {
  const sqe = encodeSqe({ opcode: IORING_OP.READ, fd: 3, addr: 0x1000n, len: 4096, userData: 7n });
  const d = decodeSqe(sqe);
  assert.deepEqual([d.opcode, d.fd, d.addr, d.len, d.userData], [
    IORING_OP.READ,
    3,
    0x1000n,
    4096,
    7n,
  ]);
  const backing = new Uint8Array(128);
  backing.set(sqe, 0);
  assert.throws(() => decodeSqe(backing.subarray(0, 40)), /an SQE is 64 bytes, got 40/);
});
