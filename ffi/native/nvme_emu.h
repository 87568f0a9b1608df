/*
 * nvme_emu.h: the ABI of libnvme_emu.so, the real backend's emulated NVMe
 * controller (a PCIe function as the host sees it: BAR0 registers and
 * doorbells, MSI-X vectors, DMA into host memory through an IOMMU).
 *
 * The controller mirrors sim/device/controller.ts and sim/device/dptr.ts
 * command for command: the same checks in the same order, the same NVMe
 * status codes (with DNR where the TypeScript controller sets it), the same
 * round-robin arbitration, the same completion order. Section numbers in
 * nvme_emu.c cite the NVMe Base Specification 2.0.
 *
 * Memory. The emulated host's physical memory is process memory. The host
 * registers every page frame it hands out (pfn -> 4 KiB of process memory)
 * with nvme_emu_frame_map(); the device resolves physical addresses through
 * that frame table only. With an IOMMU, bus addresses are IOVAs translated
 * through a 4-level page table that lives in registered frames (root at
 * root_pa): 512 little-endian u64 entries per 4 KiB table page, IOVA bits
 * 47:39, 38:30, 29:21, 20:12 index levels 4..1; an entry is present when bit
 * 0 (read) or bit 1 (write) is set; bits 51:12 hold the physical address of
 * the next table page (levels 4..2) or of the target page (level 1). This is
 * the byte layout sim/dma/io_pgtable.ts writes on both backends. Translations
 * are cached in an IOTLB (LRU, keyed by IOVA page) until the host posts an
 * invalidation, which is applied and acknowledged at once.
 *
 * Every device access to host memory goes through one bounds-checked helper:
 * the whole range is translated and checked before a byte moves, and a
 * translation fault, a permission fault or an address outside the registered
 * frames fails the command with Data Transfer Error and touches nothing.
 *
 * Modes. NVME_EMU_INLINE: nothing runs on its own; nvme_emu_process() does the
 * device's work on the caller's thread (deterministic; the differential test
 * and the sim-like runs use it). NVME_EMU_THREAD: a device thread polls the
 * doorbells while commands are outstanding and for idle_poll_ns after the last
 * work, then sleeps on a futex until the next doorbell.
 *
 * Errors: functions returning int32_t return 0 (or a count) on success and a
 * negative errno on failure. Nothing here aborts on bad input.
 */
#ifndef NVME_EMU_H
#define NVME_EMU_H

#include <stdint.h>

#define NVME_EMU_ABI 2
#define NVME_EMU_MAX_NS 16
/* Largest pfn + 1 the frame table holds (2^28 frames: a 40-bit physical space). */
#define NVME_EMU_MAX_PFN (1ull << 28)

#define NVME_EMU_INLINE 0u
#define NVME_EMU_THREAD 1u

/* nvme_emu_ns_config.flags */
#define NVME_EMU_NS_NO_DIRECT 1u /* never open the media file O_DIRECT: always bounce */

/* One namespace. 288 bytes. */
struct nvme_emu_ns_config {
  uint32_t lba_size;   /* 512 or 4096 */
  uint32_t flags;      /* NVME_EMU_NS_* */
  uint64_t size_bytes; /* a multiple of lba_size, at most 2^50 */
  /* NUL-terminated path of the media file, or "" for media in process memory
   * (sparse, zero-filled). A file is opened O_RDWR|O_CREAT without truncation
   * (an existing file's bytes are the namespace's) and extended to size_bytes
   * if shorter; the device reads and writes it through its own io_uring. */
  char media_path[272];
};

/* Controller configuration. Offsets: abi 0, nr_namespaces 4, max_queues 8,
 * mqes 12, mdts 16, sgls 20, vwc 24, mode 28, idle_poll_ns 32, seed 40,
 * iotlb_entries 48, reserved 52, ns 56 (NVME_EMU_MAX_NS entries). */
struct nvme_emu_config {
  uint32_t abi;           /* NVME_EMU_ABI */
  uint32_t nr_namespaces; /* 1..NVME_EMU_MAX_NS */
  uint32_t max_queues;    /* I/O queue pairs, 1..1024; MSI-X vectors = max_queues + 1 */
  uint32_t mqes;          /* CAP.MQES + 1, 2..65536 */
  uint32_t mdts;          /* 1..12 (log2 of the max transfer in 4 KiB pages) */
  uint32_t sgls;          /* advertise and accept SGLs: 0 or 1 */
  uint32_t vwc;           /* report a volatile write cache: 0 or 1 */
  uint32_t mode;          /* NVME_EMU_INLINE or NVME_EMU_THREAD */
  uint64_t idle_poll_ns;  /* thread mode: poll this long after the last work, then sleep */
  uint64_t seed;          /* every random choice the device makes */
  uint32_t iotlb_entries; /* IOTLB capacity, 1..65536 */
  uint32_t vwc_cache_kib; /* volatile write cache capacity in KiB, 4..262144; 0: 4096 */
  struct nvme_emu_ns_config ns[NVME_EMU_MAX_NS];
};

/* Counters, all monotonic. nvme_emu_stats() copies min(size, sizeof) bytes. */
struct nvme_emu_stats {
  uint64_t commands;          /* commands fetched (admin + I/O) */
  uint64_t admin_commands;
  uint64_t reads;             /* Read commands that completed successfully */
  uint64_t writes;
  uint64_t flushes;
  uint64_t errors;            /* completions with a nonzero status */
  uint64_t bytes_read;        /* media -> host */
  uint64_t bytes_written;     /* host -> media */
  uint64_t dma_reads;         /* device accesses to host memory (SQE fetch, PRP list, data) */
  uint64_t dma_writes;        /* (CQE post, data) */
  uint64_t dma_faults;        /* accesses refused: translation, permission, unregistered frame */
  uint64_t iotlb_hits;
  uint64_t iotlb_misses;
  uint64_t iotlb_evictions;
  uint64_t invalidations;     /* invalidation requests acknowledged */
  uint64_t media_direct;      /* media I/Os straight between the file and host pages */
  uint64_t media_bounced;     /* media I/Os through the device's bounce buffer */
  uint64_t doorbells;         /* doorbell writes accepted */
  uint64_t invalid_doorbells; /* doorbell writes refused (reported as asynchronous events) */
  uint64_t dropped_events;
  uint64_t irqs;              /* interrupt vectors raised */
  uint64_t irq_messages;      /* of those, sent as IORING_OP_MSG_RING */
  uint64_t sleeps;            /* thread mode: futex sleeps */
  uint64_t wakeups;           /* thread mode: futex wakes issued by the host */
  uint64_t busy_ns;           /* thread mode: time spent executing commands */
  uint64_t poll_loops;        /* thread mode: idle polling iterations */
  uint64_t iommu_faults;      /* of dma_faults, those the IOMMU raised (unmapped, permission) */
  /* injected faults, by kind (NVME_EMU_INJECT_*) */
  uint64_t inject_read_errors;
  uint64_t inject_write_faults;
  uint64_t inject_drops;
  uint64_t inject_cfs;
  uint64_t inject_admin_fails;
  uint64_t inject_bad_cids;
  /* volatile write cache */
  uint64_t cached_writes;     /* Write commands completed into the cache */
  uint64_t blocks_destaged;   /* cached blocks written to the media */
  uint64_t writes_lost;       /* power cut: writes whose cached blocks were dropped */
  uint64_t writes_kept;       /* power cut: writes with cached blocks that reached the media */
  uint64_t blocks_lost;       /* power cut: cached blocks dropped */
};

/* Fault injection (sim/device/faults.ts, rule for rule). A rule hits a command
 * when every filter it sets holds (flags below): the queue (admin or I/O), the
 * opcode, the NSID, and an inclusive LBA range that a Read or Write overlaps.
 * Then, when probability < 1, one double is drawn from the controller's fault
 * generator (xoshiro128** seeded with (uint32_t)seed ^ 0xfa017, as
 * sim/random.ts) and the rule fires when the draw is below it. count > 0
 * retires the rule after that many firings. Kinds drop, cfs, bad-cid and
 * admin-fail are looked at right after a command is fetched; read-error and
 * write-fault when a Read or Write has passed every check and would move data. */
#define NVME_EMU_INJECT_READ_ERROR 0u  /* Read: Unrecovered Read Error (SCT 2, SC 0x81), no data */
#define NVME_EMU_INJECT_WRITE_FAULT 1u /* Write: Write Fault (SCT 2, SC 0x80), media unchanged */
#define NVME_EMU_INJECT_DROP 2u        /* fetched, never executed nor completed (until reset) */
#define NVME_EMU_INJECT_CFS 3u         /* CSTS.CFS: nothing more is processed until reset */
#define NVME_EMU_INJECT_ADMIN_FAIL 4u  /* admin: Internal Error (SCT 0, SC 0x06), not executed */
#define NVME_EMU_INJECT_BAD_CID 5u     /* executes; its CQE's command id has bit 15 flipped */
#define NVME_EMU_INJECT_KINDS 6u
#define NVME_EMU_INJECT_MAX_RULES 64u

/* nvme_emu_fault.flags */
#define NVME_EMU_INJECT_F_NSID 1u   /* match nsid */
#define NVME_EMU_INJECT_F_LBA 2u    /* match slba_first..slba_last */
#define NVME_EMU_INJECT_F_OPCODE 4u /* match opcode */
#define NVME_EMU_INJECT_F_ADMIN 8u  /* admin commands (else I/O) */
#define NVME_EMU_INJECT_F_DNR 16u   /* Do Not Retry on the error status */

/* One rule. 48 bytes: kind 0, flags 4, nsid 8, opcode 12, slba_first 16,
 * slba_last 24, probability 32, count 40, reserved 44. */
struct nvme_emu_fault {
  uint32_t kind;  /* NVME_EMU_INJECT_* */
  uint32_t flags; /* NVME_EMU_INJECT_F_* */
  uint32_t nsid;
  uint32_t opcode; /* 0..255 */
  uint64_t slba_first;
  uint64_t slba_last; /* inclusive, >= slba_first */
  double probability; /* 0..1 */
  uint32_t count;     /* firings before the rule retires; 0: unlimited */
  uint32_t reserved;  /* 0 */
};

/* DMA access trace, for the host's DMA-API debug checker (which must see the
 * device's accesses as the TypeScript controller's port reports them): when
 * enabled, every device access that reached host memory (SQE fetch, PRP list
 * and SGL reads, data in both directions, CQE posts; refused accesses are not
 * traced) is appended, in the order made, to a single-producer ring the host
 * drains with nvme_emu_trace_take(). The header is readable in place (head,
 * tail: nothing pending when equal). A full ring drops the access and counts
 * it in dropped. 16 bytes per entry: addr 0, len 8, write 12. */
struct nvme_emu_access {
  uint64_t addr;  /* bus address */
  uint32_t len;   /* bytes */
  uint32_t write; /* 1: the device wrote host memory; 0: it read */
};
/* The ring's header, followed by capacity entries. head 0, tail 8, dropped 16, capacity 24. */
struct nvme_emu_trace {
  uint64_t head;     /* next entry the host takes (written by the host side) */
  uint64_t tail;     /* next entry the device writes (written by the device side) */
  uint64_t dropped;  /* accesses not traced because the ring was full */
  uint64_t capacity; /* entries, a power of two */
};

/* DMA fault reasons (nvme_emu_last_fault). */
#define NVME_EMU_FAULT_NONE 0
#define NVME_EMU_FAULT_UNMAPPED 1   /* no translation (IOVA not present) */
#define NVME_EMU_FAULT_PERMISSION 2 /* translation lacks read or write */
#define NVME_EMU_FAULT_BAD_ADDRESS 3 /* physical address outside the registered frames */

/* IOMMU configurations (nvme_emu_iommu_attach). */
#define NVME_EMU_IOMMU_NONE 0u      /* bus address = physical address (off, swiotlb bounce) */
#define NVME_EMU_IOMMU_IDENTITY 1u  /* identity domain (iommu.passthrough=1) */
#define NVME_EMU_IOMMU_TRANSLATE 2u /* DMA domain: the 4-level table at root_pa (lazy, strict) */

struct nvme_emu;

/* Build a controller (disabled: CC.EN = 0). NULL with *err = -errno on bad
 * configuration (-EINVAL), a media file that cannot be opened (its errno), or
 * no memory. In thread mode the device thread is started here. */
struct nvme_emu *nvme_emu_create(const struct nvme_emu_config *cfg, int32_t *err);
/* Stop the device thread, close media files, free everything. NULL is a no-op. */
void nvme_emu_destroy(struct nvme_emu *e);

/* Frames pfn .. pfn+npages-1 are the 4 KiB pages at host, host+4096, ...
 * (host 4 KiB aligned). -EINVAL on a bad argument, -EEXIST if any is mapped
 * already (nothing changes). */
int32_t nvme_emu_frame_map(struct nvme_emu *e, uint64_t pfn, uint64_t npages, void *host);
/* Remove frames; -ENOENT if any is not mapped (nothing changes). Waits while
 * the device holds one of them for a media I/O in flight. */
int32_t nvme_emu_frame_unmap(struct nvme_emu *e, uint64_t pfn, uint64_t npages);

/* Select the translation between bus and physical addresses. iotlb flushed. */
int32_t nvme_emu_iommu_attach(struct nvme_emu *e, uint32_t mode, uint64_t root_pa);
/* Post an IOTLB invalidation: npages pages from iova_pfn, or everything when
 * npages is 0. Applied and acknowledged before it returns, in either mode (the
 * IOTLB has its own lock; a translation already made keeps its pages). Returns
 * its sequence number (1, 2, ...). */
uint64_t nvme_emu_inv_post(struct nvme_emu *e, uint64_t iova_pfn, uint64_t npages);
/* Highest sequence number acknowledged. */
uint64_t nvme_emu_inv_done(struct nvme_emu *e);
/* Wait (spinning) until seq is acknowledged: 0, or -ETIMEDOUT. */
int32_t nvme_emu_inv_wait(struct nvme_emu *e, uint64_t seq, uint64_t timeout_ns);

/* 32-bit MMIO access to BAR0 (registers at 0x00.., doorbells from 0x1000). */
uint32_t nvme_emu_mmio_read32(struct nvme_emu *e, uint32_t offset);
void nvme_emu_mmio_write32(struct nvme_emu *e, uint32_t offset, uint32_t value);

/* Inline mode: fetch and execute up to budget commands (round-robin, one per
 * SQ per turn), then post up to budget due completions and record their
 * vectors. Returns completions posted; -EINVAL in thread mode. */
int32_t nvme_emu_process(struct nvme_emu *e, uint32_t budget);
/* The vectors raised since the last take, ascending, each once: count. */
int32_t nvme_emu_irq_take(struct nvme_emu *e, uint32_t *vectors, uint32_t max);
/* Thread mode: block until a vector is pending or timeout_ns passes: the
 * number pending, or -ETIMEDOUT. */
int32_t nvme_emu_irq_wait(struct nvme_emu *e, uint64_t timeout_ns);
/* Also deliver each raised vector as an IORING_OP_MSG_RING (IORING_MSG_DATA)
 * CQE in the ring ring_fd: user_data = user_data_base + vector, res =
 * vector; at most one message per vector until the host takes it with
 * nvme_emu_irq_take(). ring_fd -1 stops. -EINVAL in inline mode. */
int32_t nvme_emu_irq_ring(struct nvme_emu *e, int32_t ring_fd, uint64_t user_data_base);

/* Start tracing device accesses into a ring of capacity entries (a power of
 * two, 16..2^24), before the controller is enabled: the ring's header, or
 * NULL with *err = -EINVAL (bad capacity), -EBUSY (already tracing or enabled)
 * or -ENOMEM. The ring lives until nvme_emu_destroy(). */
const struct nvme_emu_trace *nvme_emu_trace_enable(struct nvme_emu *e, uint32_t capacity,
                                                   int32_t *err);
/* Take up to max traced accesses, oldest first: how many (0 when none or not tracing). */
int32_t nvme_emu_trace_take(struct nvme_emu *e, struct nvme_emu_access *out, uint32_t max);

/* Add a fault rule: 0, -EINVAL (a field out of range, or a filter the kind
 * cannot meet: read-error/write-fault on admin commands or another opcode,
 * admin-fail on I/O, an LBA range on admin), -ENOSPC (64 rules live). */
int32_t nvme_emu_fault_add(struct nvme_emu *e, const struct nvme_emu_fault *rule);
/* Remove every rule (the counters stay). */
void nvme_emu_fault_clear(struct nvme_emu *e);

/* Cut the power (sim/device/write_cache.ts powerCut, choice for choice):
 * the writes that still own blocks in the volatile write cache are the
 * candidates, oldest first; xoshiro128** seeded with (uint32_t)seed decides
 * each (lost when its next value has bit 31 set); when candidates exist and
 * none was chosen, the one at floor(next / 2^32 * n) is lost. Lost writes'
 * blocks are dropped, the rest reach the media (file media: then fdatasync),
 * and the controller is dead: CSTS reads 0, register writes are ignored,
 * nothing is fetched or completed again. Returns the writes lost (0 without a
 * cache or on a dead controller); the stats count writes and blocks. */
int32_t nvme_emu_power_cut(struct nvme_emu *e, uint64_t seed);

/* Counters. Returns bytes copied. */
int32_t nvme_emu_stats(struct nvme_emu *e, struct nvme_emu_stats *out, uint32_t size);
/* The most recent DMA fault: reason (NVME_EMU_FAULT_*) and address. */
int32_t nvme_emu_last_fault(struct nvme_emu *e, uint64_t *addr);
/* Commands fetched and not yet completed (a debug view; the host driver does
 * not use it). */
int32_t nvme_emu_outstanding(struct nvme_emu *e);
/* Debug views of a namespace's media (not through DMA): 0 or -errno
 * (-EINVAL for a bad nsid or range). */
int32_t nvme_emu_media_read(struct nvme_emu *e, uint32_t nsid, uint64_t pos, void *buf,
                            uint64_t len);
int32_t nvme_emu_media_write(struct nvme_emu *e, uint32_t nsid, uint64_t pos, const void *buf,
                             uint64_t len);

/* Allocations the library holds across all controllers (a ledger that a
 * sanitizer run checks is 0 after every nvme_emu_destroy). */
int64_t nvme_emu_ledger(void);
/* sizeof/offsetof values for the binding's layout test: fills up to n of
 * [sizeof config, offsetof ns, sizeof ns_config, offsetof media_path,
 *  sizeof stats, offsetof iotlb_entries, sizeof fault, offsetof probability,
 *  offsetof count]; returns how many exist. */
int32_t nvme_emu_layout(uint64_t *out, uint32_t n);

#endif
