/**
 * The queue's sysfs attributes (block/blk-sysfs.c, as in 6.0) that the
 * testbed offers: `max_sectors_kb` (read-write) and `max_hw_sectors_kb`
 * (read-only). Writing `max_sectors_kb` changes `limits.maxSectors`, which
 * bio splitting (`get_max_io_size`) and request merging read for every new
 * bio; requests already built keep their size.
 *
 * @module
 */

import { PAGE_SHIFT } from "../memory/phys.ts";
import { Errno } from "../uapi/errno.ts";
import type { QueueLimits } from "./blk_types.ts";

/** queue_max_hw_sectors_show(): max_hw_sectors in KiB. */
export function queueMaxHwSectorsShow(q: { limits: QueueLimits }): number {
  return q.limits.maxHwSectors >>> 1;
}

/** queue_max_sectors_show(): max_sectors in KiB. */
export function queueMaxSectorsShow(q: { limits: QueueLimits }): number {
  return q.limits.maxSectors >>> 1;
}

/**
 * queue_max_sectors_store(): set max_sectors to `maxSectorsKb` KiB. 0, or
 * -EINVAL when the value is not an integer or lies outside
 * [PAGE_SIZE in KiB, max_hw_sectors_kb] (6.0 has no max_dev_sectors for
 * NVMe, so max_hw_sectors_kb alone bounds it, and 0 is not "reset" yet).
 *
 * @example
 * ```ts ignore
 * queueMaxSectorsStore(bdev.queue, 4096); // 0 when max_hw_sectors_kb >= 4096
 * queueMaxSectorsStore(bdev.queue, 2); // -EINVAL: below one page
 * ```
 */
export function queueMaxSectorsStore(q: { limits: QueueLimits }, maxSectorsKb: number): number {
  const maxHwSectorsKb = queueMaxHwSectorsShow(q);
  const pageKb = 1 << (PAGE_SHIFT - 10);
  // queue_var_store(): kstrtoul of a non-number fails with -EINVAL.
  if (!Number.isSafeInteger(maxSectorsKb) || maxSectorsKb < 0) return -Errno.EINVAL;
  if (maxSectorsKb > maxHwSectorsKb || maxSectorsKb < pageKb) return -Errno.EINVAL;
  q.limits.maxSectors = maxSectorsKb << 1;
  return 0;
}
