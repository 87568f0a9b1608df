/**
 * Sizes as fio writes them: `4k`, `1m`, `1g` (powers of 1024).
 *
 * @module
 */

const UNITS: [string, number][] = [["g", 1 << 30], ["m", 1 << 20], ["k", 1 << 10]];

/** `65536` -> `64k`, `1048576` -> `1m`, `1073741824` -> `1g`; other sizes in bytes. */
export function sizeLabel(bytes: number): string {
  for (const [u, n] of UNITS) if (bytes >= n && bytes % n === 0) return `${bytes / n}${u}`;
  return String(bytes);
}

/** `4k`, `16K`, `1m`, `1g`, `4096` -> bytes; null when `s` is not a size. */
export function sizeBytes(s: string): number | null {
  const m = /^(\d+)([kKmMgG]?)$/.exec(s.trim());
  if (!m) return null;
  const unit = m[2].toLowerCase();
  return Number(m[1]) * (UNITS.find(([u]) => u === unit)?.[1] ?? 1);
}
