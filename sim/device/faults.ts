/**
 * Seeded fault injection for the NVMe controllers (the TypeScript one here,
 * the C one in `ffi/native/nvme_emu_faults.inc`, rule for rule the same).
 *
 * A rule names a kind of fault and which commands it hits. Rules are kept in
 * the order added (at most {@link NVME_FAULT_MAX_RULES}) and looked at in two
 * places:
 *
 * - **at fetch**, right after a command is read from its submission queue and
 *   before any check: the first live rule of kind `drop`, `cfs`, `bad-cid` or
 *   `admin-fail` that matches fires;
 * - **at the media**, when a Read or Write has passed every check (namespace,
 *   MDTS, LBA range, the data pointer walk) and is about to move data: the
 *   first live rule of kind `read-error` or `write-fault` that matches fires.
 *
 * A rule matches a command when every filter it sets holds: `admin` (which
 * queue: admin commands with `admin: true`, I/O commands otherwise), `opcode`,
 * `nsid`, and `slbaFirst..slbaLast` (inclusive), which only a Read or Write
 * whose blocks `[SLBA, SLBA + NLB]` overlap it can meet. Then, when the rule
 * has a `probability` below 1, one number is drawn from the controller's fault
 * generator (seeded from the controller's seed; a draw is made only for a rule
 * whose filters hold) and the rule fires when the draw is below it. A rule
 * with `count` retires after firing that many times. Every firing is counted
 * by kind.
 *
 * What each kind does to the command it hits (status values in the kernel's
 * convention, `SCT << 8 | SC`, DNR 0x4000 when the rule says `dnr`):
 *
 * | kind          | commands      | effect                                                            |
 * | ------------- | ------------- | ----------------------------------------------------------------- |
 * | `read-error`  | I/O Read      | Unrecovered Read Error (0x281); no data moves                     |
 * | `write-fault` | I/O Write     | Write Fault (0x280); no data moves, media and write cache unchanged |
 * | `drop`        | any           | fetched, never executed, never completed (a reset discards it)    |
 * | `cfs`         | any           | CSTS.CFS; neither it nor anything later is processed until reset  |
 * | `admin-fail`  | admin         | Internal Error (0x006), not executed (a Create queue creates none) |
 * | `bad-cid`     | any           | executes as usual; its CQE carries command id XOR 0x8000          |
 *
 * @module
 */

import type { Rng } from "../random.ts";
import { NVME_CMD, NVME_SC, NVME_STATUS_DNR, type NvmeCommand } from "./nvme_spec.ts";

/** The kinds of fault a controller can inject. */
export type NvmeFaultKind =
  | "read-error"
  | "write-fault"
  | "drop"
  | "cfs"
  | "admin-fail"
  | "bad-cid";

/** Every kind, in the order of the C controller's NVME_EMU_INJECT_* numbers. */
export const NVME_FAULT_KINDS: readonly NvmeFaultKind[] = [
  "read-error",
  "write-fault",
  "drop",
  "cfs",
  "admin-fail",
  "bad-cid",
];

/** Most rules a controller holds at once. */
export const NVME_FAULT_MAX_RULES = 64;

/** The bit a `bad-cid` fault flips in the completion's command identifier. */
export const NVME_FAULT_BAD_CID_XOR = 0x8000;

/** Salt mixed into the controller's seed for its fault generator. */
export const NVME_FAULT_SEED_SALT = 0x000f_a017;

/** One fault rule: a kind, which commands it hits, how often, how many times. */
export interface NvmeFaultRule {
  /** What happens to a command the rule hits. */
  kind: NvmeFaultKind;
  /** Only commands with this NSID (default: any). */
  nsid?: number;
  /** First LBA of the range (default 0); a Read or Write overlapping the range matches. */
  slbaFirst?: bigint;
  /** Last LBA of the range, inclusive (default 2^64 - 1). */
  slbaLast?: bigint;
  /** Only this opcode (default: any the kind allows). */
  opcode?: number;
  /** Match admin commands (default: I/O commands; `admin-fail` always matches admin). */
  admin?: boolean;
  /** Chance in [0, 1] that a matching command is hit, drawn from the controller's seeded generator. */
  probability?: number;
  /** Firings before the rule retires (a positive integer; default: unlimited). */
  count?: number;
  /** Set Do Not Retry on the error status (`read-error`, `write-fault`, `admin-fail`). */
  dnr?: boolean;
}

/** A rule as a controller keeps it (validated, filters resolved). */
interface LiveRule {
  readonly kind: NvmeFaultKind;
  readonly nsid: number | undefined;
  readonly lba: [bigint, bigint] | undefined;
  readonly opcode: number | undefined;
  readonly admin: boolean;
  readonly probability: number;
  /** Firings left; Infinity when unlimited. */
  left: number;
  readonly dnr: boolean;
}

const U64_MAX = (1n << 64n) - 1n;
const FETCH_KINDS = new Set<NvmeFaultKind>(["drop", "cfs", "bad-cid", "admin-fail"]);

/** A zero count for every kind. */
export function emptyFaultCounts(): Record<NvmeFaultKind, number> {
  const out = {} as Record<NvmeFaultKind, number>;
  for (const k of NVME_FAULT_KINDS) out[k] = 0;
  return out;
}

/**
 * Check a rule and fill in its defaults; throws RangeError naming the field
 * at fault. Both controllers (and the C binding, before the library sees it)
 * apply exactly these checks.
 */
export function validateFaultRule(rule: NvmeFaultRule): Required<NvmeFaultRule> & {
  nsidSet: boolean;
  lbaSet: boolean;
  opcodeSet: boolean;
  countSet: boolean;
} {
  const kind = rule.kind;
  if (!NVME_FAULT_KINDS.includes(kind)) {
    throw new RangeError(
      `fault rule: kind ${String(kind)} (one of ${NVME_FAULT_KINDS.join(", ")})`,
    );
  }
  const u32 = (x: number | undefined, what: string) => {
    if (x !== undefined && (!Number.isInteger(x) || x < 0 || x > 0xffff_ffff)) {
      throw new RangeError(`fault rule: ${what} ${x} is not a u32`);
    }
  };
  u32(rule.nsid, "nsid");
  if (
    rule.opcode !== undefined &&
    (!Number.isInteger(rule.opcode) || rule.opcode < 0 || rule.opcode > 0xff)
  ) {
    throw new RangeError(`fault rule: opcode ${rule.opcode} (0..255)`);
  }
  for (const [k, v] of [["slbaFirst", rule.slbaFirst], ["slbaLast", rule.slbaLast]] as const) {
    if (v !== undefined && (typeof v !== "bigint" || v < 0n || v > U64_MAX)) {
      throw new RangeError(`fault rule: ${k} ${String(v)} is not a u64 bigint`);
    }
  }
  const lbaSet = rule.slbaFirst !== undefined || rule.slbaLast !== undefined;
  const first = rule.slbaFirst ?? 0n;
  const last = rule.slbaLast ?? U64_MAX;
  if (first > last) throw new RangeError(`fault rule: slbaFirst ${first} > slbaLast ${last}`);
  const p = rule.probability ?? 1;
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
    throw new RangeError(`fault rule: probability ${String(rule.probability)} (0..1)`);
  }
  if (
    rule.count !== undefined &&
    (!Number.isInteger(rule.count) || rule.count < 1 || rule.count > 0xffff_ffff)
  ) {
    throw new RangeError(`fault rule: count ${rule.count} (a positive integer)`);
  }
  const media = kind === "read-error" || kind === "write-fault";
  let admin = rule.admin ?? false;
  if (kind === "admin-fail") {
    if (rule.admin === false) throw new RangeError("fault rule: admin-fail matches admin commands");
    admin = true;
  }
  if (media && admin) throw new RangeError(`fault rule: ${kind} matches I/O commands only`);
  const want = kind === "read-error" ? NVME_CMD.READ : kind === "write-fault" ? NVME_CMD.WRITE : -1;
  if (media && rule.opcode !== undefined && rule.opcode !== want) {
    throw new RangeError(`fault rule: ${kind} matches opcode 0x${want.toString(16)} only`);
  }
  if (admin && lbaSet) throw new RangeError("fault rule: an LBA range matches I/O commands only");
  return {
    kind,
    nsid: rule.nsid ?? 0,
    slbaFirst: first,
    slbaLast: last,
    opcode: rule.opcode ?? 0,
    admin,
    probability: p,
    count: rule.count ?? 0,
    dnr: rule.dnr ?? false,
    nsidSet: rule.nsid !== undefined,
    lbaSet,
    opcodeSet: rule.opcode !== undefined,
    countSet: rule.count !== undefined,
  };
}

/** The rules of one controller, its fault generator and its counts. */
export class NvmeFaultInjector {
  readonly #rng: Rng;
  #rules: LiveRule[] = [];
  /** Faults injected, by kind. */
  readonly injected: Record<NvmeFaultKind, number> = emptyFaultCounts();

  /** Draw from `rng` (the controller's fault generator). */
  constructor(rng: Rng) {
    this.#rng = rng;
  }

  /** Rules still live. */
  get ruleCount(): number {
    return this.#rules.length;
  }

  /** Add a rule (validated; RangeError when invalid or when {@link NVME_FAULT_MAX_RULES} are live). */
  add(rule: NvmeFaultRule): void {
    const v = validateFaultRule(rule);
    if (this.#rules.length >= NVME_FAULT_MAX_RULES) {
      throw new RangeError(`fault rule: ${NVME_FAULT_MAX_RULES} rules already`);
    }
    this.#rules.push({
      kind: v.kind,
      nsid: v.nsidSet ? v.nsid : undefined,
      lba: v.lbaSet ? [v.slbaFirst, v.slbaLast] : undefined,
      opcode: v.opcodeSet ? v.opcode : undefined,
      admin: v.admin,
      probability: v.probability,
      left: v.countSet ? v.count : Infinity,
      dnr: v.dnr,
    });
  }

  /** Remove every rule (the counts stay). */
  clear(): void {
    this.#rules = [];
  }

  /** The first live fetch-time rule (drop, cfs, bad-cid, admin-fail) that hits `cmd`. */
  atFetch(cmd: NvmeCommand, admin: boolean): { kind: NvmeFaultKind; status: number } | null {
    if (this.#rules.length === 0) return null;
    const r = this.#fire(cmd, admin, FETCH_KINDS);
    if (!r) return null;
    return {
      kind: r.kind,
      status: r.kind === "admin-fail" ? this.#status(NVME_SC.INTERNAL, r) : 0,
    };
  }

  /** At the media: the status of the first live read-error / write-fault rule that hits `cmd`, or 0. */
  atMedia(cmd: NvmeCommand, isWrite: boolean): number {
    if (this.#rules.length === 0) return 0;
    const kinds = new Set<NvmeFaultKind>([isWrite ? "write-fault" : "read-error"]);
    const r = this.#fire(cmd, false, kinds);
    if (!r) return 0;
    return this.#status(isWrite ? NVME_SC.WRITE_FAULT : NVME_SC.READ_ERROR, r);
  }

  #status(sc: number, r: LiveRule): number {
    return r.dnr ? sc | NVME_STATUS_DNR : sc;
  }

  #fire(cmd: NvmeCommand, admin: boolean, kinds: Set<NvmeFaultKind>): LiveRule | null {
    for (let i = 0; i < this.#rules.length; i++) {
      const r = this.#rules[i];
      if (!kinds.has(r.kind) || r.admin !== admin || !matches(r, cmd)) continue;
      if (r.probability < 1 && !(this.#rng.float() < r.probability)) continue;
      this.injected[r.kind]++;
      if (--r.left === 0) this.#rules.splice(i, 1);
      return r;
    }
    return null;
  }
}

function matches(r: LiveRule, cmd: NvmeCommand): boolean {
  if (r.opcode !== undefined && cmd.opcode !== r.opcode) return false;
  if (r.nsid !== undefined && cmd.nsid !== r.nsid) return false;
  if (r.lba) {
    if (cmd.opcode !== NVME_CMD.READ && cmd.opcode !== NVME_CMD.WRITE) return false;
    const slba = BigInt(cmd.cdw10 >>> 0) | (BigInt(cmd.cdw11 >>> 0) << 32n);
    let end = slba + BigInt(cmd.cdw12 & 0xffff);
    if (end > U64_MAX) end = U64_MAX;
    if (slba > r.lba[1] || end < r.lba[0]) return false;
  }
  return true;
}
