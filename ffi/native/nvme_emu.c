/*
 * nvme_emu.c: the emulated NVMe controller of the real backend (see
 * nvme_emu.h for the ABI). A port of sim/device/controller.ts,
 * sim/device/dptr.ts, sim/device/identify.ts, sim/dma/bus.ts,
 * sim/dma/iommu.ts and sim/dma/iotlb.ts: the same checks in the same order,
 * the same statuses, the same completion order. Section numbers cite the
 * NVMe Base Specification 2.0.
 *
 * Pieces (included below, not compiled on their own):
 *   nvme_emu_dma.inc    frame table, IOMMU walk, IOTLB, the access helper
 *   nvme_emu_media.inc  memory (sparse) and file (io_uring) media
 *   nvme_emu_dptr.inc   PRP and SGL walks
 *   nvme_emu_faults.inc fault rules, the volatile write cache, power cut
 *   nvme_emu_ctrl.inc   registers, doorbells, admin and I/O commands
 *   nvme_emu_thread.inc the device thread, interrupts, io_uring messages
 */
#include "nvme_emu.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SHIFT 12
#define PAGE_SIZE 4096u
#define PAGE_MASK_LOW 4095u

/* ------------------------------------------------------------------ ledger */

static _Atomic int64_t g_ledger;

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p) atomic_fetch_add(&g_ledger, 1);
  return p;
}
static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (p) atomic_fetch_add(&g_ledger, 1);
  return p;
}
static void *xaligned(size_t align, size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, align, n ? n : align) != 0) return NULL;
  atomic_fetch_add(&g_ledger, 1);
  return p;
}
/* realloc of a block already counted (or NULL: counted on success). */
static void *xrealloc(void *old, size_t n) {
  void *p = realloc(old, n ? n : 1);
  if (p && !old) atomic_fetch_add(&g_ledger, 1);
  return p;
}
static void xfree(void *p) {
  if (!p) return;
  free(p);
  atomic_fetch_sub(&g_ledger, 1);
}

int64_t nvme_emu_ledger(void) { return atomic_load(&g_ledger); }

/* ------------------------------------------------------------ byte helpers */

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --------------------------------------------------------------- NVMe spec */

#define SQE_SIZE 64
#define CQE_SIZE 16
#define SGL_DESC_SIZE 16
#define IDENTIFY_SIZE 4096
#define NSID_ALL 0xffffffffu

#define ADM_DELETE_SQ 0x00
#define ADM_CREATE_SQ 0x01
#define ADM_DELETE_CQ 0x04
#define ADM_CREATE_CQ 0x05
#define ADM_IDENTIFY 0x06
#define ADM_ABORT 0x08
#define ADM_SET_FEATURES 0x09
#define ADM_GET_FEATURES 0x0a
#define ADM_ASYNC_EVENT 0x0c

#define CMD_FLUSH 0x00
#define CMD_WRITE 0x01
#define CMD_READ 0x02
#define RW_FUA_CDW12 (1u << 30)

#define CNS_NS 0x00
#define CNS_CTRL 0x01
#define CNS_NS_ACTIVE_LIST 0x02
#define FEAT_NUM_QUEUES 0x07
#define FUSE_MASK 0x03

#define SGL_DATA_BLOCK 0x0
#define SGL_BIT_BUCKET 0x1
#define SGL_SEGMENT 0x2
#define SGL_LAST_SEGMENT 0x3
#define SGL_SUB_ADDRESS 0x0
#define SGL_SUB_OFFSET 0x1

#define Q_PHYS_CONTIG 1u
#define CQ_IRQ_ENABLED 2u

#define ST_DNR 0x4000u
#define SC_SUCCESS 0x000u
#define SC_INVALID_OPCODE 0x001u
#define SC_INVALID_FIELD 0x002u
#define SC_DATA_XFER_ERROR 0x004u
#define SC_INTERNAL 0x006u
#define SC_INVALID_NS 0x00bu
#define SC_CMD_SEQ_ERROR 0x00cu
#define SC_SGL_INVALID_LAST 0x00du
#define SC_SGL_INVALID_COUNT 0x00eu
#define SC_SGL_INVALID_DATA 0x00fu
#define SC_SGL_INVALID_TYPE 0x011u
#define SC_PRP_INVALID_OFFSET 0x013u
#define SC_SGL_INVALID_OFFSET 0x016u
#define SC_LBA_RANGE 0x080u
#define SC_CQ_INVALID 0x100u
#define SC_QID_INVALID 0x101u
#define SC_QUEUE_SIZE 0x102u
#define SC_ASYNC_LIMIT 0x105u
#define SC_INVALID_VECTOR 0x108u
#define SC_INVALID_QUEUE 0x10cu
#define SC_FEATURE_NOT_SAVEABLE 0x10du
#define SC_WRITE_FAULT 0x280u
#define SC_READ_ERROR 0x281u

static inline uint32_t dnr(uint32_t sc) { return sc | ST_DNR; }

/* Registers (sim/device/port.ts NVME_REG, sim/device/regs.ts). */
#define REG_CAP 0x00
#define REG_VS 0x08
#define REG_INTMS 0x0c
#define REG_INTMC 0x10
#define REG_CC 0x14
#define REG_CSTS 0x1c
#define REG_AQA 0x24
#define REG_ASQ 0x28
#define REG_ACQ 0x30
#define REG_DBS 0x1000

#define CC_ENABLE 1u
#define CC_SHN_MASK (3u << 14)
#define CSTS_RDY 1u
#define CSTS_CFS 2u
#define CSTS_SHST_CMPLT (2u << 2)
#define CSTS_SHST_MASK (3u << 2)
#define NVME_VS_1_4 0x00010400u

#define AER_INVALID_DB_REGISTER 0x00
#define AER_INVALID_DB_VALUE 0x01
#define MAX_QUEUED_EVENTS 16
#define NVME_AERL 3
#define SGL_MAX_DESCRIPTORS 4096
#define SGL_MAX_SEGMENTS 256

#define IOMMU_READ 1u
#define IOMMU_WRITE 2u
#define IOMMU_MAX_PFN (1ull << 36)

/* Frame table: two levels of 2^14 entries (pfn < 2^28). */
#define FT_BITS 14
#define FT_SIZE (1u << FT_BITS)

/* ------------------------------------------------------------- structures */

struct iovv {
  struct iovec *v;
  size_t n, cap;
};

struct completion {
  struct completion *next;
  uint32_t sqid, cqid;
  uint16_t cid;
  uint32_t status, result;
  bool counted;
};

struct clist {
  struct completion *head, *tail;
  size_t n;
};

struct sq {
  bool live;
  uint64_t base;
  uint32_t size, cqid, head, tail, outstanding;
};

struct cq {
  bool live, ien;
  uint64_t base;
  uint32_t size, vector, tail, head, phase, nsqs;
  struct clist ready;
};

struct tlb_ent {
  uint64_t key, pte;
  int32_t prev, next, hnext;
};

struct segment {
  uint64_t addr;
  uint32_t len;
  bool bit_bucket;
};


#define MEDIA_CHUNK 4096u
#define MR_BITS 13
#define MR_SIZE (1u << MR_BITS)

/* The fault generator: xoshiro128** (sim/random.ts). */
struct rng32 {
  uint32_t s[4];
};

/* One block in the volatile write cache. */
struct cache_ent {
  struct cache_ent *prev, *next; /* FIFO, oldest first */
  struct cache_ent *hnext;       /* hash chain */
  uint64_t key, seq, lba;
  uint32_t nsid;
  uint8_t data[]; /* the namespace's lba_size */
};

#define CACHE_DEFAULT_KIB 4096u
#define CACHE_MAX_KIB (256u * 1024u)

struct ns {
  uint32_t lba_size;
  uint64_t size_bytes, nlb;
  /* memory media: 3-level radix of 4 KiB chunks (chunk index < 2^39) */
  void ***radix; /* MR_SIZE top entries -> MR_SIZE mid -> MR_SIZE chunk pointers */
  /* file media */
  int fd;        /* buffered fd (or -1 for memory media) */
  int fd_direct; /* O_DIRECT fd, or -1 */
};

struct nvme_emu {
  struct nvme_emu_config cfg;
  uint32_t nns, max_queues, mqes, mdts, nvectors;
  bool sgls, vwc, thread_mode;
  uint64_t cap;

  /* frames */
  void **_Atomic *ft; /* FT_SIZE pointers to leaf arrays */
  pthread_mutex_t frame_mu;
  pthread_rwlock_t frames_rw; /* device: read side while it touches host memory */

  /* IOMMU */
  uint32_t iommu_mode;
  uint64_t root_pa;
  uint32_t tlb_cap, tlb_n;
  struct tlb_ent *tlb;
  int32_t *tlb_hash;
  uint32_t tlb_hmask;
  int32_t tlb_lru_head, tlb_lru_tail, tlb_free;
  /* invalidations: posted and acknowledged in order */
  pthread_mutex_t inv_mu;
  /* The IOTLB (the IOMMU's cache): held while a translation looks it up or fills
   * it, and while an invalidation is applied. Lock order: mu, then tlb_mu. */
  pthread_mutex_t tlb_mu;
  _Atomic uint64_t inv_posted, inv_done;

  /* controller state (under mu) */
  pthread_mutex_t mu;
  uint32_t cc, csts, aqa, intms;
  uint64_t asq, acq;
  uint32_t page_size;
  struct sq *sqs;
  struct cq *cqs;
  uint32_t nq; /* sqs length: 0 while disabled, max_queues + 1 when enabled */
  struct clist scheduled;
  struct completion *cfree;
  uint32_t rr;
  int64_t fetched_uncompleted;
  bool queues_created;
  uint16_t aers[NVME_AERL + 2];
  uint32_t naers;
  uint32_t events[MAX_QUEUED_EVENTS];
  uint32_t nevents;
  bool polling;

  /* per-command scratch */
  struct segment *segs;
  size_t nsegs, segs_cap;
  struct iovv iov;
  uint8_t *buf; /* (1 << mdts) * 4096, 4096-aligned */
  size_t buf_size;
  uint8_t idbuf[IDENTIFY_SIZE];

  struct ns ns[NVME_EMU_MAX_NS];

  /* DMA access trace (single producer: whoever runs the device) */
  struct nvme_emu_trace *_Atomic trace;

  /* injected faults */
  struct rng32 fault_rng;
  struct nvme_emu_fault rules[NVME_EMU_INJECT_MAX_RULES];
  uint32_t nrules;

  /* volatile write cache (vwc): entries in a FIFO and a hash by (nsid, lba) */
  struct cache_ent *c_head, *c_tail;
  struct cache_ent **c_hash;
  uint32_t c_hmask;
  uint64_t c_bytes, c_cap, c_seq, c_blocks;
  /* power was cut: nothing runs again */
  bool dead;

  /* stats and faults */
  struct nvme_emu_stats st;
  uint32_t fault_reason;
  uint64_t fault_addr;

  /* interrupts */
  pthread_mutex_t irq_mu;
  uint64_t *irq_pending; /* bitmap of nvectors */
  uint64_t *irq_msg_sent;
  uint64_t *vec_round;   /* vectors raised in one process round */
  uint32_t nwords;
  _Atomic uint32_t irq_word;
  int32_t irq_ring_fd;
  uint64_t irq_user_data;

  /* io_uring for media and messages */
  struct io_uring ring;
  bool ring_ok;
  pthread_mutex_t ring_mu;

  /* device thread */
  pthread_t thread;
  bool thread_started;
  _Atomic uint32_t wake_word;
  _Atomic uint32_t asleep;
  _Atomic uint64_t wakeups; /* host-side count, folded into stats */
  _Atomic uint64_t poll_loops_idle; /* device-side idle polls without the lock */
  /* Thread mode: doorbell writes that found the device busy, one slot per
   * doorbell (value | DB_MAIL_PENDING), applied by the device before its next
   * round: a posted MMIO write never waits for the device's media I/O. */
  _Atomic uint32_t *db_mail;
  _Atomic bool stop;
};

#include "nvme_emu_dma.inc"
#include "nvme_emu_media.inc"
#include "nvme_emu_faults.inc"
#include "nvme_emu_dptr.inc"
#include "nvme_emu_ctrl.inc"
#include "nvme_emu_thread.inc"
