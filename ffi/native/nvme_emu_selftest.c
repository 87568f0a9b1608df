/* nvme_emu_selftest.c: a small host driver exercising libnvme_emu (inline
 * and thread mode, IOMMU off and translating, memory and file media). */
#include "nvme_emu.c"

#include <stdio.h>

#define CHECK(c)                                                            \
  do {                                                                      \
    if (!(c)) {                                                             \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);          \
      exit(1);                                                              \
    }                                                                       \
  } while (0)

#define NPAGES 2048
#define PFN0 0x100

struct host {
  struct nvme_emu *e;
  uint8_t *mem;
  uint32_t next_page;
  uint64_t asq, acq, sq1, cq1; /* physical */
  uint32_t asq_tail, acq_head, acq_phase, sq1_tail, cq1_head, cq1_phase;
  uint32_t qsize;
  bool iommu;
  uint64_t iova_off; /* bus = phys + iova_off when translating */
  uint64_t root;
  uint16_t cid;
};

static uint64_t pa_of(struct host *h, uint32_t page) { (void)h; return ((uint64_t)PFN0 + page) << 12; }
static uint8_t *va_of(struct host *h, uint64_t pa) { return h->mem + (pa - ((uint64_t)PFN0 << 12)); }
static uint64_t alloc_page(struct host *h) {
  CHECK(h->next_page < NPAGES);
  uint64_t pa = pa_of(h, h->next_page++);
  memset(va_of(h, pa), 0, 4096);
  return pa;
}
static uint64_t bus(struct host *h, uint64_t pa) { return h->iommu ? pa + h->iova_off : pa; }

/* Map iova -> pa in the 4-level table (tables in host frames). */
static void iommu_map(struct host *h, uint64_t iova, uint64_t pa, uint64_t prot) {
  uint64_t t = h->root;
  for (int level = 4; level > 1; level--) {
    uint64_t *tab = (uint64_t *)(void *)va_of(h, t);
    uint64_t idx = (iova >> (12 + 9 * (level - 1))) & 511;
    if (!(tab[idx] & 3)) tab[idx] = alloc_page(h) | 3;
    t = tab[idx] & 0x000ffffffffff000ull;
  }
  uint64_t *tab = (uint64_t *)(void *)va_of(h, t);
  tab[(iova >> 12) & 511] = pa | prot;
}

static void wait_or_process(struct host *h) {
  if (!h->e->thread_mode) CHECK(nvme_emu_process(h->e, 64) >= 0);
}

/* Reap one CQE from a CQ (spinning in thread mode). */
static void reap(struct host *h, uint64_t cq, uint32_t *head, uint32_t *phase, uint32_t qid,
                 uint8_t out[16]) {
  uint64_t t0 = now_ns();
  for (;;) {
    wait_or_process(h);
    uint8_t *c = va_of(h, cq) + *head * 16;
    uint16_t st = __atomic_load_n((uint16_t *)(void *)(c + 14), __ATOMIC_ACQUIRE);
    if ((st & 1) == *phase) {
      memcpy(out, c, 16);
      if (++*head == h->qsize) {
        *head = 0;
        *phase ^= 1;
      }
      nvme_emu_mmio_write32(h->e, 0x1000 + (2 * qid + 1) * 4, *head);
      return;
    }
    CHECK(now_ns() - t0 < 5000000000ull);
  }
}

static uint16_t admin(struct host *h, uint8_t sqe[64], uint32_t *result) {
  uint16_t cid = h->cid++;
  st16(sqe + 2, cid);
  memcpy(va_of(h, h->asq) + h->asq_tail * 64, sqe, 64);
  h->asq_tail = (h->asq_tail + 1) % h->qsize;
  nvme_emu_mmio_write32(h->e, 0x1000, h->asq_tail);
  uint8_t c[16];
  reap(h, h->acq, &h->acq_head, &h->acq_phase, 0, c);
  CHECK(ld16(c + 12) == cid);
  if (result) *result = ld32(c);
  return ld16(c + 14) >> 1;
}

static void io_submit(struct host *h, uint8_t sqe[64]) {
  memcpy(va_of(h, h->sq1) + h->sq1_tail * 64, sqe, 64);
  h->sq1_tail = (h->sq1_tail + 1) % h->qsize;
}
static void io_ring(struct host *h) { nvme_emu_mmio_write32(h->e, 0x1000 + 8, h->sq1_tail); }

static uint16_t io(struct host *h, uint8_t sqe[64]) {
  uint16_t cid = h->cid++;
  st16(sqe + 2, cid);
  io_submit(h, sqe);
  io_ring(h);
  uint8_t c[16];
  reap(h, h->cq1, &h->cq1_head, &h->cq1_phase, 1, c);
  CHECK(ld16(c + 12) == cid);
  CHECK(ld16(c + 10) == 1);
  return ld16(c + 14) >> 1;
}

static void rw_sqe(uint8_t sqe[64], uint8_t op, uint64_t slba, uint32_t nlb, uint64_t prp1,
                   uint64_t prp2) {
  memset(sqe, 0, 64);
  sqe[0] = op;
  st32(sqe + 4, 1);
  st64(sqe + 24, prp1);
  st64(sqe + 32, prp2);
  st64(sqe + 40, slba);
  st32(sqe + 48, nlb - 1);
}

static void host_init(struct host *h, const struct nvme_emu_config *cfg, bool iommu) {
  memset(h, 0, sizeof *h);
  int32_t err;
  h->e = nvme_emu_create(cfg, &err);
  if (!h->e) fprintf(stderr, "create: %d\n", err);
  CHECK(h->e);
  h->mem = aligned_alloc(4096, (size_t)NPAGES * 4096);
  CHECK(h->mem);
  CHECK(nvme_emu_frame_map(h->e, PFN0, NPAGES, h->mem) == 0);
  CHECK(nvme_emu_frame_map(h->e, PFN0, 1, h->mem) == -EEXIST);
  h->qsize = 64;
  h->acq_phase = h->cq1_phase = 1;
  h->asq = alloc_page(h);
  h->acq = alloc_page(h);
  h->sq1 = alloc_page(h);
  h->cq1 = alloc_page(h);
  h->iommu = iommu;
  if (iommu) {
    h->iova_off = 0x7f0000000000ull;
    h->root = alloc_page(h);
    /* map every host page except the last 16 (left unmapped for fault tests) */
    for (uint32_t p = 0; p < NPAGES - 16; p++)
      iommu_map(h, pa_of(h, p) + h->iova_off, pa_of(h, p), 3);
    CHECK(nvme_emu_iommu_attach(h->e, NVME_EMU_IOMMU_TRANSLATE, h->root) == 0);
  }
  nvme_emu_mmio_write32(h->e, 0x24, ((h->qsize - 1) << 16) | (h->qsize - 1));
  nvme_emu_mmio_write32(h->e, 0x28, (uint32_t)bus(h, h->asq));
  nvme_emu_mmio_write32(h->e, 0x2c, (uint32_t)(bus(h, h->asq) >> 32));
  nvme_emu_mmio_write32(h->e, 0x30, (uint32_t)bus(h, h->acq));
  nvme_emu_mmio_write32(h->e, 0x34, (uint32_t)(bus(h, h->acq) >> 32));
  nvme_emu_mmio_write32(h->e, 0x14, 1 | (6 << 16) | (4 << 20));
  CHECK(nvme_emu_mmio_read32(h->e, 0x1c) == 1);
  uint8_t sqe[64] = {0};
  /* Identify controller */
  uint64_t id = alloc_page(h);
  sqe[0] = ADM_IDENTIFY;
  st64(sqe + 24, bus(h, id));
  st32(sqe + 40, CNS_CTRL);
  CHECK(admin(h, sqe, NULL) == 0);
  CHECK(ld16(va_of(h, id)) == 0x1b36);
  CHECK(memcmp(va_of(h, id) + 24, "premap testbed NVMe controller  ", 32) == 0);
  CHECK(va_of(h, id)[77] == cfg->mdts);
  /* Identify namespace 1 */
  memset(sqe, 0, 64);
  sqe[0] = ADM_IDENTIFY;
  st32(sqe + 4, 1);
  st64(sqe + 24, bus(h, id));
  CHECK(admin(h, sqe, NULL) == 0);
  CHECK(ld64(va_of(h, id)) == cfg->ns[0].size_bytes / cfg->ns[0].lba_size);
  /* Identify with a bad nsid */
  st32(sqe + 4, 7);
  CHECK(admin(h, sqe, NULL) == (SC_INVALID_NS | ST_DNR));
  /* Number of queues */
  memset(sqe, 0, 64);
  sqe[0] = ADM_SET_FEATURES;
  st32(sqe + 40, FEAT_NUM_QUEUES);
  uint32_t res;
  CHECK(admin(h, sqe, &res) == 0);
  CHECK(res == ((cfg->max_queues - 1) * 0x10001u));
  /* Create CQ 1 (vector 1, IEN) and SQ 1 */
  memset(sqe, 0, 64);
  sqe[0] = ADM_CREATE_CQ;
  st64(sqe + 24, bus(h, h->cq1));
  st32(sqe + 40, 1 | ((h->qsize - 1) << 16));
  st32(sqe + 44, 3 | (1u << 16));
  CHECK(admin(h, sqe, NULL) == 0);
  memset(sqe, 0, 64);
  sqe[0] = ADM_CREATE_SQ;
  st64(sqe + 24, bus(h, h->sq1));
  st32(sqe + 40, 1 | ((h->qsize - 1) << 16));
  st32(sqe + 44, 1 | (1u << 16));
  CHECK(admin(h, sqe, NULL) == 0);
  uint32_t v[4];
  while (nvme_emu_irq_take(h->e, v, 4) > 0) {}
}

static void host_fini(struct host *h) {
  nvme_emu_destroy(h->e);
  free(h->mem);
}

/* Write then read back n pages through PRP1/PRP2/list. */
static void rw_roundtrip(struct host *h, uint32_t npages, uint64_t slba_bytes, uint32_t seed) {
  uint32_t lba = h->e->ns[0].lba_size;
  uint64_t src[64], dst[64];
  for (uint32_t i = 0; i < npages; i++) {
    src[i] = alloc_page(h);
    dst[i] = alloc_page(h);
    for (uint32_t j = 0; j < 4096; j++) va_of(h, src[i])[j] = (uint8_t)(seed + i * 7 + j * 13);
  }
  uint64_t lsrc = alloc_page(h), ldst = alloc_page(h);
  for (uint32_t i = 1; i < npages; i++) {
    st64(va_of(h, lsrc) + (i - 1) * 8, bus(h, src[i]));
    st64(va_of(h, ldst) + (i - 1) * 8, bus(h, dst[i]));
  }
  uint64_t p2s = npages == 2 ? bus(h, src[1]) : npages > 2 ? bus(h, lsrc) : 0;
  uint64_t p2d = npages == 2 ? bus(h, dst[1]) : npages > 2 ? bus(h, ldst) : 0;
  uint8_t sqe[64];
  uint32_t nlb = npages * 4096 / lba;
  rw_sqe(sqe, CMD_WRITE, slba_bytes / lba, nlb, bus(h, src[0]), p2s);
  CHECK(io(h, sqe) == 0);
  rw_sqe(sqe, CMD_READ, slba_bytes / lba, nlb, bus(h, dst[0]), p2d);
  CHECK(io(h, sqe) == 0);
  for (uint32_t i = 0; i < npages; i++) CHECK(memcmp(va_of(h, src[i]), va_of(h, dst[i]), 4096) == 0);
  uint8_t *m = malloc(4096);
  CHECK(nvme_emu_media_read(h->e, 1, slba_bytes, m, 4096) == 0);
  CHECK(memcmp(m, va_of(h, src[0]), 4096) == 0);
  free(m);
}

static struct nvme_emu_config base_cfg(uint32_t mode) {
  struct nvme_emu_config c;
  memset(&c, 0, sizeof c);
  c.abi = NVME_EMU_ABI;
  c.nr_namespaces = 1;
  c.max_queues = 4;
  c.mqes = 1024;
  c.mdts = 5;
  c.sgls = 1;
  c.mode = mode;
  c.idle_poll_ns = 50000;
  c.iotlb_entries = 64;
  c.ns[0].lba_size = 512;
  c.ns[0].size_bytes = 1ull << 40; /* 1 TiB, sparse */
  return c;
}

static void test_inline(bool iommu) {
  struct nvme_emu_config c = base_cfg(NVME_EMU_INLINE);
  struct host h;
  host_init(&h, &c, iommu);
  rw_roundtrip(&h, 1, 0, 1);
  rw_roundtrip(&h, 2, 1 << 20, 2);
  rw_roundtrip(&h, 7, (1ull << 40) - 7 * 4096, 3);
  uint32_t v[8];
  int32_t nv = nvme_emu_irq_take(h.e, v, 8);
  CHECK(nv == 1 && v[0] == 1);
  /* LBA range */
  uint8_t sqe[64];
  uint64_t buf = alloc_page(&h);
  rw_sqe(sqe, CMD_READ, (1ull << 40) / 512, 1, bus(&h, buf), 0);
  CHECK(io(&h, sqe) == (SC_LBA_RANGE | ST_DNR));
  /* PRP offset */
  rw_sqe(sqe, CMD_READ, 0, 1, bus(&h, buf) + 2, 0);
  CHECK(io(&h, sqe) == (SC_PRP_INVALID_OFFSET | ST_DNR));
  /* fault: unmapped bus address -> Data Transfer Error, nothing touched */
  uint64_t bad = iommu ? pa_of(&h, NPAGES - 8) + h.iova_off : ((uint64_t)PFN0 + NPAGES + 5) << 12;
  memset(h.mem + (size_t)(NPAGES - 8) * 4096, 0xee, 4096);
  rw_sqe(sqe, CMD_READ, 0, 16, bus(&h, buf), bad);
  CHECK(io(&h, sqe) == SC_DATA_XFER_ERROR);
  for (int i = 0; i < 4096; i++) CHECK(h.mem[(size_t)(NPAGES - 8) * 4096 + i] == 0xee);
  uint64_t fa;
  int32_t reason = nvme_emu_last_fault(h.e, &fa);
  CHECK(reason == (iommu ? NVME_EMU_FAULT_UNMAPPED : NVME_EMU_FAULT_BAD_ADDRESS));
  CHECK(fa == bad);
  /* a write from an unmapped page leaves the media untouched */
  uint8_t before[4096], after[4096];
  CHECK(nvme_emu_media_read(h.e, 1, 0, before, 4096) == 0);
  rw_sqe(sqe, CMD_WRITE, 0, 16, bus(&h, buf), bad);
  CHECK(io(&h, sqe) == SC_DATA_XFER_ERROR);
  CHECK(nvme_emu_media_read(h.e, 1, 0, after, 4096) == 0);
  CHECK(memcmp(before, after, 4096) == 0);
  /* SGL data block read */
  uint64_t sbuf = alloc_page(&h);
  memset(sqe, 0, 64);
  sqe[0] = CMD_READ;
  sqe[1] = 1 << 6;
  st32(sqe + 4, 1);
  st64(sqe + 24, bus(&h, sbuf));
  st32(sqe + 32, 4096);
  sqe[39] = SGL_DATA_BLOCK << 4;
  st32(sqe + 48, 7);
  CHECK(io(&h, sqe) == 0);
  CHECK(nvme_emu_media_read(h.e, 1, 0, before, 4096) == 0);
  CHECK(memcmp(before, va_of(&h, sbuf), 4096) == 0);
  struct nvme_emu_stats st;
  CHECK(nvme_emu_stats(h.e, &st, sizeof st) == sizeof st);
  printf("inline %s: ok (commands %lu, dma_faults %lu, iotlb hits %lu misses %lu evictions %lu)\n",
         iommu ? "TRANSLATE" : "NONE", (unsigned long)st.commands, (unsigned long)st.dma_faults,
         (unsigned long)st.iotlb_hits, (unsigned long)st.iotlb_misses,
         (unsigned long)st.iotlb_evictions);
  /* invalidation: unmap a page, stale until invalidated */
  if (iommu) {
    uint64_t seq = nvme_emu_inv_post(h.e, 0, 0);
    CHECK(nvme_emu_inv_done(h.e) == seq);
  }
  CHECK(nvme_emu_outstanding(h.e) == 0);
  host_fini(&h);
  CHECK(nvme_emu_ledger() == 0);
}

static void test_thread(void) {
  struct nvme_emu_config c = base_cfg(NVME_EMU_THREAD);
  c.ns[0].lba_size = 4096;
  c.ns[0].size_bytes = 1ull << 30;
  struct host h;
  host_init(&h, &c, false);
  rw_roundtrip(&h, 4, 0, 9);
  /* 32 outstanding 4k reads */
  uint64_t bufs[32];
  for (int i = 0; i < 32; i++) bufs[i] = alloc_page(&h);
  uint8_t sqe[64];
  uint64_t done = 0, t0 = now_ns();
  const uint64_t total = 400000;
  uint64_t submitted = 0;
  uint32_t inflight = 0;
  while (done < total) {
    while (inflight < 32 && submitted < total) {
      rw_sqe(sqe, CMD_READ, submitted % 1024, 1, bus(&h, bufs[submitted % 32]), 0);
      st16(sqe + 2, (uint16_t)submitted);
      io_submit(&h, sqe);
      submitted++;
      inflight++;
    }
    io_ring(&h);
    for (;;) {
      uint8_t *ce = va_of(&h, h.cq1) + h.cq1_head * 16;
      uint16_t stw = __atomic_load_n((uint16_t *)(void *)(ce + 14), __ATOMIC_ACQUIRE);
      if ((stw & 1) != h.cq1_phase) break;
      CHECK((stw >> 1) == 0);
      if (++h.cq1_head == h.qsize) {
        h.cq1_head = 0;
        h.cq1_phase ^= 1;
      }
      done++;
      inflight--;
    }
    nvme_emu_mmio_write32(h.e, 0x1000 + 12, h.cq1_head);
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  printf("thread: %.0f 4k reads/s (32 outstanding, memory media)\n", (double)total / secs);
  uint32_t v[8];
  while (nvme_emu_irq_take(h.e, v, 8) > 0) {}
  /* doorbell -> irq round trip: while polling, and after sleeping */
  for (int mode = 0; mode < 2; mode++) {
    uint64_t sum = 0;
    const int n = mode ? 200 : 2000;
    for (int i = 0; i < n; i++) {
      if (mode) {
        struct timespec ts = {0, 300000}; /* past idle_poll_ns (50 us): the thread sleeps */
        nanosleep(&ts, NULL);
      }
      rw_sqe(sqe, CMD_READ, 0, 1, bus(&h, bufs[0]), 0);
      io_submit(&h, sqe);
      uint64_t a = now_ns();
      io_ring(&h);
      CHECK(nvme_emu_irq_wait(h.e, 1000000000ull) > 0);
      sum += now_ns() - a;
      CHECK(nvme_emu_irq_take(h.e, v, 8) == 1 && v[0] == 1);
      if (++h.cq1_head == h.qsize) {
        h.cq1_head = 0;
        h.cq1_phase ^= 1;
      }
      nvme_emu_mmio_write32(h.e, 0x1000 + 12, h.cq1_head);
    }
    printf("thread: doorbell->irq %s: %.1f us\n", mode ? "after sleeping" : "while polling",
           (double)sum / n / 1000.0);
  }
  /* MSG_RING delivery */
  struct io_uring hr;
  CHECK(io_uring_queue_init(8, &hr, 0) == 0);
  CHECK(nvme_emu_irq_ring(h.e, hr.ring_fd, 1000) == 0);
  rw_sqe(sqe, CMD_READ, 0, 1, bus(&h, bufs[0]), 0);
  io_submit(&h, sqe);
  io_ring(&h);
  struct io_uring_cqe *cqe;
  CHECK(io_uring_wait_cqe(&hr, &cqe) == 0);
  CHECK(cqe->user_data == 1001 && cqe->res == 1);
  io_uring_cqe_seen(&hr, cqe);
  CHECK(nvme_emu_irq_take(h.e, v, 8) == 1);
  CHECK(nvme_emu_irq_ring(h.e, -1, 0) == 0);
  io_uring_queue_exit(&hr);
  struct nvme_emu_stats st;
  nvme_emu_stats(h.e, &st, sizeof st);
  printf("thread: sleeps %lu wakeups %lu irqs %lu irq_messages %lu poll_loops %lu\n",
         (unsigned long)st.sleeps, (unsigned long)st.wakeups, (unsigned long)st.irqs,
         (unsigned long)st.irq_messages, (unsigned long)st.poll_loops);
  host_fini(&h);
  CHECK(nvme_emu_ledger() == 0);
}

static void test_file(const char *dir, uint32_t flags) {
  char path[256];
  snprintf(path, sizeof path, "%s/nvme_emu_selftest.%d.img", dir, (int)getpid());
  unlink(path);
  struct nvme_emu_config c = base_cfg(NVME_EMU_INLINE);
  c.ns[0].lba_size = 4096;
  c.ns[0].size_bytes = 64ull << 20;
  c.ns[0].flags = flags;
  snprintf(c.ns[0].media_path, sizeof c.ns[0].media_path, "%s", path);
  struct host h;
  host_init(&h, &c, false);
  bool direct = h.e->ns[0].fd_direct >= 0;
  rw_roundtrip(&h, 8, 4 << 20, 5);
  uint8_t sqe[64];
  memset(sqe, 0, 64);
  sqe[0] = CMD_FLUSH;
  st32(sqe + 4, 1);
  CHECK(io(&h, sqe) == 0);
  uint8_t expect[4096];
  CHECK(nvme_emu_media_read(h.e, 1, 4 << 20, expect, 4096) == 0);
  struct nvme_emu_stats st;
  nvme_emu_stats(h.e, &st, sizeof st);
  host_fini(&h);
  CHECK(nvme_emu_ledger() == 0);
  host_init(&h, &c, false);
  uint64_t b = alloc_page(&h);
  rw_sqe(sqe, CMD_READ, 1024, 1, bus(&h, b), 0);
  CHECK(io(&h, sqe) == 0);
  CHECK(memcmp(va_of(&h, b), expect, 4096) == 0);
  host_fini(&h);
  CHECK(nvme_emu_ledger() == 0);
  unlink(path);
  printf("file %s%s: ok (O_DIRECT %s, media_direct %lu, media_bounced %lu)\n", dir,
         flags ? " NO_DIRECT" : "", direct ? "yes" : "no", (unsigned long)st.media_direct,
         (unsigned long)st.media_bounced);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/var/tmp";
  test_inline(false);
  test_inline(true);
  test_file(dir, 0);
  test_file(dir, NVME_EMU_NS_NO_DIRECT);
  test_thread();
  CHECK(nvme_emu_ledger() == 0);
  printf("selftest: all ok\n");
  return 0;
}
