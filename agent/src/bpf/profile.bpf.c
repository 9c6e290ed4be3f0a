// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// CPU profile samples: attached to one cpu-clock perf event per CPU that the agent opens, each
// sample sends the running thread's process, command and both call stacks (kernel, then user)
// to user space through a perf buffer, where they are counted and symbolized. Whole stacks
// travel rather than stack-map ids, so no two stacks can collide into one and a full buffer
// is counted as lost samples instead of wrong ones. Perf buffers and bpf_get_stack exist from
// Linux 4.18, so every kernel a fleet runs can be profiled.
//
#include "kernel_types.h"

struct bpf_perf_event_data {
	struct pt_regs regs;
	__u64 sample_period;
	__u64 addr;
};
struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

// Frames kept per stack, as perf's default `kernel.perf_event_max_stack` keeps.
#define MAX_FRAMES 127
#define TASK_COMM_LEN 16

// Set at load when the agent runs in a pid namespace of its own (a pod): that namespace's
// device and inode, so samples carry process ids as the agent's /proc shows them (the kernel's
// own ids mean nothing there). Processes outside it are marked OUTSIDE.
const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0;
#define OUTSIDE 0xffffffff

// Set at the window's start and end, so the samples cover exactly the window while the perf
// events and their attachment (slow on many CPUs) stay outside it.
volatile __u32 sampling = 0;
// Samples whose record could not be written (a stack walk that failed counts as an empty
// stack, not as lost).
__u64 unrecorded = 0;

struct sample {
	__u32 tgid;
	__u32 kernel_bytes;
	__u32 user_bytes;
	__u32 unused;
	char comm[TASK_COMM_LEN];
	__u64 frames[2 * MAX_FRAMES];
};

// One record per CPU to build the sample in: it is too large for the program's stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sample);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} samples SEC(".maps");

#define STACK_BYTES (MAX_FRAMES * sizeof(__u64))

SEC("perf_event")
int sample_stack(struct bpf_perf_event_data *ctx)
{
	if (!sampling)
		return 0;
	__u32 zero = 0;
	struct sample *sample = bpf_map_lookup_elem(&scratch, &zero);
	if (!sample)
		return 0;
	if (pidns_ino) {
		struct bpf_pidns_info ns = {};
		if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
			sample->tgid = OUTSIDE;
		else
			sample->tgid = ns.tgid;
	} else {
		sample->tgid = bpf_get_current_pid_tgid() >> 32;
	}
	bpf_get_current_comm(&sample->comm, sizeof(sample->comm));
	long kernel = bpf_get_stack(ctx, sample->frames, STACK_BYTES, 0);
	kernel = kernel < 0 ? 0 : kernel;
	// Bounded behind a barrier so the compiler keeps the check older verifiers need to see
	// the user half start inside the record.
	__u64 offset = kernel;
	barrier_var(offset);
	if (offset > STACK_BYTES)
		offset = STACK_BYTES;
	long user = 0;
	if (sample->tgid != 0)
		user = bpf_get_stack(ctx, (void *)sample->frames + offset, STACK_BYTES,
				     BPF_F_USER_STACK);
	user = user < 0 ? 0 : user;
	sample->kernel_bytes = offset;
	sample->user_bytes = user;
	__u64 size = offsetof(struct sample, frames) + offset + user;
	barrier_var(size);
	if (size > sizeof(*sample))
		size = sizeof(*sample);
	if (bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, sample, size) < 0)
		__sync_fetch_and_add(&unrecorded, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
