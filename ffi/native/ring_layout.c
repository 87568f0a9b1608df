/*
 * ring_layout: print the byte layout of liburing's struct io_uring as JSON,
 * so ffi/liburing.ts can check the offsets it hard-codes against the header.
 */
#include <liburing.h>
#include <stddef.h>
#include <stdio.h>

#define F(name, field) printf("  \"%s\": %zu,\n", name, offsetof(struct io_uring, field))

int main(void)
{
	printf("{\n");
	F("sq.khead", sq.khead);
	F("sq.ktail", sq.ktail);
	F("sq.kring_mask", sq.kring_mask);
	F("sq.kring_entries", sq.kring_entries);
	F("sq.kflags", sq.kflags);
	F("sq.kdropped", sq.kdropped);
	F("sq.array", sq.array);
	F("sq.sqes", sq.sqes);
	F("sq.sqe_head", sq.sqe_head);
	F("sq.sqe_tail", sq.sqe_tail);
	F("sq.ring_sz", sq.ring_sz);
	F("sq.ring_ptr", sq.ring_ptr);
	F("sq.ring_mask", sq.ring_mask);
	F("sq.ring_entries", sq.ring_entries);
	F("cq.khead", cq.khead);
	F("cq.ktail", cq.ktail);
	F("cq.kring_mask", cq.kring_mask);
	F("cq.kring_entries", cq.kring_entries);
	F("cq.kflags", cq.kflags);
	F("cq.koverflow", cq.koverflow);
	F("cq.cqes", cq.cqes);
	F("cq.ring_sz", cq.ring_sz);
	F("cq.ring_ptr", cq.ring_ptr);
	F("cq.ring_mask", cq.ring_mask);
	F("cq.ring_entries", cq.ring_entries);
	F("flags", flags);
	F("ring_fd", ring_fd);
	F("features", features);
	F("enter_ring_fd", enter_ring_fd);
	F("int_flags", int_flags);
	printf("  \"SIZE\": %zu,\n", sizeof(struct io_uring));
	printf("  \"sqe.SIZE\": %zu,\n", sizeof(struct io_uring_sqe));
	printf("  \"cqe.SIZE\": %zu,\n", sizeof(struct io_uring_cqe));
	printf("  \"params.SIZE\": %zu\n", sizeof(struct io_uring_params));
	printf("}\n");
	return 0;
}
