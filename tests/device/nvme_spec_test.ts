import assert from "node:assert/strict";
import {
  decodeCqe,
  decodeNvmeCommand,
  encodeCqe,
  encodeNvmeCommand,
  NVME_CMD,
  NVME_SC,
  NVME_STATUS_DNR,
  nvmeCmdPsdt,
  nvmeCmdSlba,
  nvmeStatusName,
  nvmeStatusString,
} from "../../sim/device/nvme_spec.ts";

Deno.test("status names from the Generic and Command Specific tables", () => {
  assert.equal(nvmeStatusName(0, 0x01), "Invalid Command Opcode");
  assert.equal(nvmeStatusName(0, 0x04), "Data Transfer Error");
  assert.equal(nvmeStatusName(0, 0x0f), "Data SGL Length Invalid");
  assert.equal(nvmeStatusName(0, 0x13), "PRP Offset Invalid");
  assert.equal(nvmeStatusName(0, 0x80), "LBA Out of Range");
  assert.equal(nvmeStatusName(1, 0x01), "Invalid Queue Identifier");
  assert.equal(nvmeStatusName(3, 0x99), "Unknown status (SCT 3, SC 0x99)");
  assert.equal(
    nvmeStatusString(NVME_SC.LBA_RANGE | NVME_STATUS_DNR),
    "LBA Out of Range (0x0/0x80, DNR)",
  );
});

Deno.test("SQE layout: opcode, flags/PSDT, CID, NSID, PRPs, SLBA, NLB", () => {
  const b = encodeNvmeCommand({
    opcode: NVME_CMD.READ,
    commandId: 0xbeef,
    nsid: 3,
    prp1: 0x1122_3344_5566_7000n,
    prp2: 0x8000n,
    slba: 0x1_0000_0002n,
    nlb0: 7,
  });
  assert.equal(b.length, 64);
  assert.deepEqual([...b.subarray(0, 8)], [0x02, 0x00, 0xef, 0xbe, 3, 0, 0, 0]);
  assert.deepEqual([...b.subarray(24, 32)], [0x00, 0x70, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
  assert.deepEqual([...b.subarray(40, 50)], [2, 0, 0, 0, 1, 0, 0, 0, 7, 0]);
  const c = decodeNvmeCommand(b);
  assert.equal(c.commandId, 0xbeef);
  assert.equal(nvmeCmdSlba(c), 0x1_0000_0002n);
  assert.equal(nvmeCmdPsdt(c), 0);
  const s = encodeNvmeCommand({
    opcode: 1,
    commandId: 1,
    sgl: { addr: 0x1000n, length: 512, type: 2 },
  });
  assert.equal(s[1], 0x40); // PSDT 01b
  assert.equal(s[39], 0x20); // Segment descriptor identifier
  assert.deepEqual([...s.subarray(32, 36)], [0, 2, 0, 0]);
});

Deno.test("CQE layout: status field P bit 0, SC 8:1, SCT 11:9, DNR 15", () => {
  const b = encodeCqe({
    result: 0xdeadbeef,
    sqHead: 5,
    sqId: 2,
    commandId: 9,
    status: NVME_SC.QID_INVALID | NVME_STATUS_DNR,
    phase: 1,
  });
  assert.deepEqual([...b.subarray(8, 16)], [5, 0, 2, 0, 9, 0, 0x03, 0x82]);
  const c = decodeCqe(b);
  assert.equal(c.result, 0xdeadbeef);
  assert.equal(c.sct, 1);
  assert.equal(c.sc, 1);
  assert.equal(c.dnr, true);
  assert.equal(c.phase, 1);
});

Deno.test("decoders read only their entry's bytes: a shorter view of a larger buffer is refused", () => {
  const backing = new Uint8Array(256).fill(0xff);
  const short = backing.subarray(0, 32); // 32 bytes, with 224 more after it in the same buffer
  assert.throws(() => decodeNvmeCommand(short), /decodeNvmeCommand: 64 bytes at 0 of a 32-byte/);
  assert.throws(() => decodeNvmeCommand(backing.subarray(0, 64), 1), /64 bytes at 1 of a 64-byte/);
  assert.throws(() => decodeCqe(backing.subarray(0, 8)), /decodeCqe: 16 bytes at 0 of a 8-byte/);
  assert.equal(decodeNvmeCommand(backing.subarray(0, 64)).opcode, 0xff);
});
