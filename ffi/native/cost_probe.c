/*
 * cost_probe: per-operation costs measured on this machine, for the kernel cost
 * model's measured entries (bench/kernel_costs.json, bench/measure_costs.ts).
 *
 * Usage: cost_probe [--rounds=N]
 * Prints one JSON object, ns per operation, each the best of --rounds runs:
 *   nop_batch1   io_uring NOP through liburing, one io_uring_submit_and_wait per op:
 *                one syscall, one SQE, one CQE
 *   nop_batch32  the same with 32 NOPs per syscall: per-SQE/CQE work, syscall amortised
 *   store64      one 64-bit little-endian entry written into a 4 KiB page (a PRP entry)
 *   sg_fill      one 32-byte scatterlist entry filled (page_link, offset, length,
 *                dma_address, dma_length) and the next one chained, as sg_set_page does
 *   bvec_fill    one 16-byte bio_vec filled (page, len, offset)
 *   alloc_free   one 256-byte malloc + free pair (a slab / mempool / dma_pool object)
 *   memcpy_byte  one byte of a 64 KiB memcpy (swiotlb bounce)
 *   memset_byte  one byte of a 4 KiB memset (an allocation's initialisation)
 *   call         one indirect call through a table of function pointers (a dma_map_ops
 *                or blk_mq_ops entry) to a function that does almost nothing
 *   handshake    one post-and-wait round trip with another thread spinning on a
 *                shared word (a queued invalidation + wait descriptor, answered by
 *                another agent)
 * Exits 1 with a message on stderr on a bad argument or a ring error.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static volatile uint64_t sink;

static double nop_rate(unsigned batch, unsigned ops)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	unsigned long long t0, done = 0;
	unsigned i, head, seen;
	int ret = io_uring_queue_init(batch, &ring, 0);

	if (ret < 0) {
		fprintf(stderr, "cost_probe: io_uring_queue_init: %s\n", strerror(-ret));
		exit(1);
	}
	t0 = now_ns();
	while (done < ops) {
		for (i = 0; i < batch; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, done + i);
		}
		ret = io_uring_submit_and_wait(&ring, batch);
		if (ret < 0) {
			fprintf(stderr, "cost_probe: io_uring_submit_and_wait: %s\n", strerror(-ret));
			exit(1);
		}
		seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			sink += cqe->user_data;
			seen++;
		}
		io_uring_cq_advance(&ring, seen);
		done += seen;
	}
	t0 = now_ns() - t0;
	io_uring_queue_exit(&ring);
	return (double)t0 / (double)done;
}

static double store64(unsigned rounds)
{
	uint64_t *page = aligned_alloc(4096, 4096);
	unsigned long long t0 = now_ns();
	unsigned r, i;

	for (r = 0; r < rounds; r++) {
		for (i = 0; i < 512; i++)
			page[i] = (uint64_t)(r + i) << 12;
		__asm__ volatile("" : : "r"(page) : "memory");
	}
	t0 = now_ns() - t0;
	sink += page[r & 511];
	free(page);
	return (double)t0 / ((double)rounds * 512.0);
}

struct sg {
	uint64_t page_link;
	uint32_t offset;
	uint32_t length;
	uint64_t dma_address;
	uint32_t dma_length;
	uint32_t pad;
};

static double sg_fill(unsigned rounds)
{
	struct sg *t = aligned_alloc(4096, 128 * sizeof(struct sg));
	unsigned long long t0 = now_ns();
	unsigned r, i;

	for (r = 0; r < rounds; r++) {
		for (i = 0; i < 128; i++) {
			t[i].page_link = ((uint64_t)(r + i) << 12) | (i == 127 ? 2u : 0u);
			t[i].offset = 0;
			t[i].length = 4096;
			t[i].dma_address = 0;
			t[i].dma_length = 0;
		}
		__asm__ volatile("" : : "r"(t) : "memory");
	}
	t0 = now_ns() - t0;
	sink += t[r & 127].page_link;
	free(t);
	return (double)t0 / ((double)rounds * 128.0);
}

struct bvec {
	uint64_t page;
	uint32_t len;
	uint32_t offset;
};

static double bvec_fill(unsigned rounds)
{
	struct bvec *v = aligned_alloc(4096, 256 * sizeof(struct bvec));
	unsigned long long t0 = now_ns();
	unsigned r, i;

	for (r = 0; r < rounds; r++) {
		for (i = 0; i < 256; i++) {
			v[i].page = (uint64_t)(r + i) << 12;
			v[i].len = 4096;
			v[i].offset = 0;
		}
		__asm__ volatile("" : : "r"(v) : "memory");
	}
	t0 = now_ns() - t0;
	sink += v[r & 255].page;
	free(v);
	return (double)t0 / ((double)rounds * 256.0);
}

static double alloc_free(unsigned rounds)
{
	unsigned long long t0 = now_ns();
	unsigned r;

	for (r = 0; r < rounds; r++) {
		void *p = malloc(256);
		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
	t0 = now_ns() - t0;
	return (double)t0 / (double)rounds;
}

static double copy_byte(unsigned rounds, int set)
{
	size_t n = set ? 4096 : 65536;
	unsigned char *a = aligned_alloc(4096, n), *b = aligned_alloc(4096, n);
	unsigned long long t0;
	unsigned r;

	memset(a, 1, n);
	memset(b, 2, n);
	t0 = now_ns();
	for (r = 0; r < rounds; r++) {
		if (set)
			memset(b, (int)r, n);
		else
			memcpy(b, a, n);
		__asm__ volatile("" : : "r"(b) : "memory");
	}
	t0 = now_ns() - t0;
	sink += b[r % n];
	free(a);
	free(b);
	return (double)t0 / ((double)rounds * (double)n);
}

__attribute__((noinline)) static uint64_t op_a(uint64_t x)
{
	return x + 1;
}

__attribute__((noinline)) static uint64_t op_b(uint64_t x)
{
	return x ^ 3;
}

static uint64_t (*volatile ops_table[2])(uint64_t) = { op_a, op_b };

static double indirect_call(unsigned rounds)
{
	unsigned long long t0 = now_ns();
	uint64_t x = 0;
	unsigned r;

	for (r = 0; r < rounds; r++)
		x = ops_table[r & 1](x);
	t0 = now_ns() - t0;
	sink += x;
	return (double)t0 / (double)rounds;
}

static _Atomic uint64_t posted, acked;
static _Atomic int stop;

static void *responder(void *arg)
{
	uint64_t last = 0;

	(void)arg;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint64_t p = atomic_load_explicit(&posted, memory_order_acquire);
		if (p != last) {
			last = p;
			atomic_store_explicit(&acked, p, memory_order_release);
		}
	}
	return NULL;
}

static double handshake(unsigned rounds)
{
	pthread_t t;
	unsigned long long t0;
	uint64_t i;

	atomic_store(&posted, 0);
	atomic_store(&acked, 0);
	atomic_store(&stop, 0);
	if (pthread_create(&t, NULL, responder, NULL) != 0) {
		fprintf(stderr, "cost_probe: pthread_create failed\n");
		exit(1);
	}
	/* Let the responder start spinning before the clock runs. */
	atomic_store_explicit(&posted, 1, memory_order_release);
	while (atomic_load_explicit(&acked, memory_order_acquire) != 1)
		;
	t0 = now_ns();
	for (i = 2; i < (uint64_t)rounds + 2; i++) {
		atomic_store_explicit(&posted, i, memory_order_release);
		while (atomic_load_explicit(&acked, memory_order_acquire) != i)
			;
	}
	t0 = now_ns() - t0;
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	return (double)t0 / (double)rounds;
}

static double best(double a, double b)
{
	return a < b ? a : b;
}

int main(int argc, char **argv)
{
	unsigned long long rounds = 5;
	double r[10];
	unsigned k, i;
	char *end;

	for (i = 1; i < (unsigned)argc; i++) {
		if (strncmp(argv[i], "--rounds=", 9) == 0) {
			errno = 0;
			rounds = strtoull(argv[i] + 9, &end, 10);
			if (errno == 0 && *end == '\0' && rounds >= 1 && rounds <= 100)
				continue;
		}
		fprintf(stderr, "cost_probe: bad argument %s (usage: cost_probe [--rounds=1..100])\n",
			argv[i]);
		return 1;
	}
	for (k = 0; k < 10; k++)
		r[k] = 1e30;
	for (k = 0; k < rounds; k++) {
		r[0] = best(r[0], nop_rate(1, 200000));
		r[1] = best(r[1], nop_rate(32, 2000000));
		r[2] = best(r[2], store64(20000));
		r[3] = best(r[3], sg_fill(20000));
		r[4] = best(r[4], bvec_fill(20000));
		r[5] = best(r[5], alloc_free(2000000));
		r[6] = best(r[6], copy_byte(5000, 0));
		r[7] = best(r[7], copy_byte(50000, 1));
		r[8] = best(r[8], handshake(200000));
		r[9] = best(r[9], indirect_call(20000000));
	}
	printf("{ \"rounds\": %llu, \"nop_batch1\": %.3f, \"nop_batch32\": %.3f, \"store64\": %.4f, "
	       "\"sg_fill\": %.4f, \"bvec_fill\": %.4f, \"alloc_free\": %.3f, \"memcpy_byte\": %.5f, "
	       "\"memset_byte\": %.5f, \"handshake\": %.3f, \"call\": %.4f }\n",
	       rounds, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]);
	return sink == 0xdeadbeefcafef00dull ? 2 : 0;
}
