/*
 * ring_bench: the C liburing NOP reference for bench/ring.ts.
 *
 * Usage: ring_bench --batch=N --ops=N [--entries=N]
 * Per batch: io_uring_get_sqe + io_uring_prep_nop + io_uring_sqe_set_data64
 * for each op, one io_uring_submit_and_wait(batch), then io_uring_for_each_cqe
 * and io_uring_cq_advance. Prints one JSON line:
 *   { "ops": N, "ns": T, "ops_per_s": X }
 * Exits 1 with a message on stderr on bad arguments or any ring error.
 */
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BATCH 4096u
#define MAX_OPS 1000000000ull

static int parse_u64(const char *arg, const char *name, unsigned long long *out)
{
	size_t n = strlen(name);
	char *end;

	if (strncmp(arg, name, n) != 0 || arg[n] != '=')
		return 0;
	errno = 0;
	*out = strtoull(arg + n + 1, &end, 10);
	if (errno != 0 || *end != '\0' || end == arg + n + 1) {
		fprintf(stderr, "ring_bench: bad value in %s\n", arg);
		exit(1);
	}
	return 1;
}

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	unsigned long long batch = 32, ops = 100000, entries = 0, done = 0, user_data = 0;
	unsigned long long t0, ns;
	struct io_uring ring;
	int i, ret;

	for (i = 1; i < argc; i++) {
		if (parse_u64(argv[i], "--batch", &batch) || parse_u64(argv[i], "--ops", &ops) ||
		    parse_u64(argv[i], "--entries", &entries))
			continue;
		fprintf(stderr, "ring_bench: unknown argument %s\n", argv[i]);
		return 1;
	}
	if (batch == 0 || batch > MAX_BATCH) {
		fprintf(stderr, "ring_bench: --batch must be in [1, %u]\n", MAX_BATCH);
		return 1;
	}
	if (ops == 0 || ops > MAX_OPS) {
		fprintf(stderr, "ring_bench: --ops must be in [1, %llu]\n", MAX_OPS);
		return 1;
	}
	if (entries == 0)
		entries = batch;
	if (entries < batch || entries > MAX_BATCH) {
		fprintf(stderr, "ring_bench: --entries must be in [batch, %u]\n", MAX_BATCH);
		return 1;
	}
	ret = io_uring_queue_init((unsigned)entries, &ring, 0);
	if (ret < 0) {
		fprintf(stderr, "ring_bench: io_uring_queue_init: %s\n", strerror(-ret));
		return 1;
	}

	t0 = now_ns();
	while (done < ops) {
		unsigned long long n = ops - done < batch ? ops - done : batch;
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		unsigned long long k;

		for (k = 0; k < n; k++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

			if (!sqe) {
				fprintf(stderr, "ring_bench: SQ full\n");
				return 1;
			}
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, user_data++);
		}
		ret = io_uring_submit_and_wait(&ring, (unsigned)n);
		if (ret < 0 || (unsigned long long)ret != n) {
			fprintf(stderr, "ring_bench: io_uring_submit_and_wait: %d\n", ret);
			return 1;
		}
		while (seen < n) {
			io_uring_for_each_cqe(&ring, head, cqe) {
				if (cqe->res != 0) {
					fprintf(stderr, "ring_bench: NOP res %d\n", cqe->res);
					return 1;
				}
				seen++;
			}
			io_uring_cq_advance(&ring, seen);
			done += seen;
			n -= seen;
			seen = 0;
		}
	}
	ns = now_ns() - t0;
	io_uring_queue_exit(&ring);
	printf("{ \"ops\": %llu, \"ns\": %llu, \"ops_per_s\": %.1f }\n", ops, ns,
	       ns ? (double)ops * 1e9 / (double)ns : 0.0);
	return 0;
}
