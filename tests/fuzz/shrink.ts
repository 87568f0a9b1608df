/**
 * Delta debugging shared by the fuzzers and the random differential: drop
 * chunks of a failing sequence while it still fails, halving the chunk when
 * no chunk can go, bounded in executions.
 *
 * @module
 */

/** The shortest sequence found that `stillFails`, within `maxRuns` executions. */
export function shrinkByChunks<T>(
  items: T[],
  stillFails: (candidate: T[]) => boolean,
  maxRuns: number,
): T[] {
  let cur = items;
  let runs = 0;
  let chunk = Math.max(1, Math.floor(cur.length / 2));
  while (chunk >= 1 && runs < maxRuns) {
    let progressed = false;
    for (let i = 0; i < cur.length && runs < maxRuns; i += chunk) {
      const cand = [...cur.slice(0, i), ...cur.slice(i + chunk)];
      runs++;
      if (stillFails(cand)) {
        cur = cand;
        progressed = true;
        i -= chunk;
      }
    }
    if (!progressed) chunk = Math.floor(chunk / 2);
  }
  return cur;
}
