// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// Kernel lock contention aggregated in the kernel over one window: by lock address, lock
// flags and kernel call path, the count, total wait and longest wait. Built with the
// workspace (agent/build.rs) and loaded by the agent, so no node needs a compiler.
//
// Contention comes from the lock:contention_begin/end tracepoints (Linux 5.19 and later),
// attached as raw tracepoints so no kernel BTF is needed. Besides contention, where kprobes
// are allowed: acquisitions of the global `epmutex` (its address given at load), and the
// target's epoll_ctl (by op) and epoll_wait calls.

#include "kernel_types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

// Open contentions kept per thread; deeper nesting is not traced. A power of two: each index
// is masked with it behind a compiler barrier, since older verifiers (6.1) cannot see an index
// bounded by earlier comparisons and the compiler would drop a mask it knows to be redundant.
#define MAX_NESTING 4

static __always_inline __u32 slot(__u32 index)
{
	barrier_var(index);
	return index & (MAX_NESTING - 1);
}
// Kernel frames kept per call path; deeper walks cost more per event. The first frames are
// the tracing machinery's (the raw tracepoint's caller), skipped in user space.
#define STACK_DEPTH 12
#define TASK_COMM_LEN 16

// Set at load: the global epmutex's address (0: none on this kernel), and the process name
// whose epoll calls are counted.
const volatile __u64 epmutex_address = 0;
const volatile char target_comm[TASK_COMM_LEN] = "nginx";

struct open_contention {
	__u64 lock;
	__u64 start_ns;
	__s32 stack_id;
	__u32 flags;
};

struct thread_state {
	__u32 depth;
	__u32 unused;
	struct open_contention open[MAX_NESTING];
};

struct contention_key {
	__u64 lock;
	__s32 stack_id;
	__u32 flags;
};

struct contention_stats {
	__u64 count;
	__u64 wait_ns;
	__u64 max_wait_ns;
};

// Preallocated: these programs run inside lock slow paths, where allocating is no option.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct thread_state);
} threads SEC(".maps");

// Per CPU, so neither the count nor the maximum needs an atomic; user space adds them up.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct contention_key);
	__type(value, struct contention_stats);
} contentions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

// Events lost to full maps: said with the results rather than silently missing.
__u64 dropped_threads = 0;
__u64 dropped_contentions = 0;
__u64 epmutex_acquisitions = 0;
__u64 epoll_ctl_calls[4] = {};
__u64 epoll_wait_calls = 0;

static const struct thread_state empty_thread = {};

// The tracepoints' lock flags (include/trace/events/lock.h), also given by the slow-path
// probes so both sources name lock types alike.
#define LCB_F_SPIN (1U << 0)
#define LCB_F_READ (1U << 1)
#define LCB_F_WRITE (1U << 2)
#define LCB_F_MUTEX (1U << 5)

// A contention opens. A second begin on the lock already on top (a mutex that stops spinning
// and sleeps) continues that contention, so its wait includes the spinning. The wait starts
// after the stack walk, so the walk is not counted as waiting. `sleeping`: a slow-path probe
// of a lock that sleeps, which no other lock's slow path can be inside of, so anything still
// open on the thread is a return the kretprobe missed and is dropped.
static __always_inline int open_contention(void *ctx, __u64 lock, __u32 flags, int sleeping)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct thread_state *state = bpf_map_lookup_elem(&threads, &tid);
	if (!state) {
		bpf_map_update_elem(&threads, &tid, &empty_thread, BPF_NOEXIST);
		state = bpf_map_lookup_elem(&threads, &tid);
		if (!state) {
			__sync_fetch_and_add(&dropped_threads, 1);
			return 0;
		}
	}
	__u32 depth = sleeping ? 0 : state->depth;
	if (depth > MAX_NESTING)
		return 0;
	if (depth > 0 && state->open[slot(depth - 1)].lock == lock)
		return 0;
	if (depth == MAX_NESTING)
		return 0;
	struct open_contention *open = &state->open[slot(depth)];
	open->lock = lock;
	open->flags = flags;
	open->stack_id = bpf_get_stackid(ctx, &stacks, 0);
	open->start_ns = bpf_ktime_get_ns();
	state->depth = depth + 1;
	return 0;
}

// The contention on top of the thread's stack ends: on `lock` (the tracepoint), or whatever it
// is (a slow path's return, which does not say its lock: `lock` 0).
static __always_inline int close_contention(__u64 lock)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct thread_state *state = bpf_map_lookup_elem(&threads, &tid);
	if (!state)
		return 0;
	__u32 depth = state->depth;
	if (depth == 0 || depth > MAX_NESTING)
		return 0;
	struct open_contention *open = &state->open[slot(depth - 1)];
	if (lock && open->lock != lock)
		return 0;
	__u64 wait = now - open->start_ns;
	struct contention_key key = {
		.lock = open->lock,
		.stack_id = open->stack_id,
		.flags = open->flags,
	};
	if (depth == 1)
		bpf_map_delete_elem(&threads, &tid);
	else
		state->depth = depth - 1;

	struct contention_stats *stats = bpf_map_lookup_elem(&contentions, &key);
	if (!stats) {
		struct contention_stats first = { .count = 1, .wait_ns = wait, .max_wait_ns = wait };
		if (bpf_map_update_elem(&contentions, &key, &first, BPF_NOEXIST)) {
			stats = bpf_map_lookup_elem(&contentions, &key);
			if (!stats) {
				__sync_fetch_and_add(&dropped_contentions, 1);
				return 0;
			}
		} else {
			return 0;
		}
	}
	stats->count += 1;
	stats->wait_ns += wait;
	if (wait > stats->max_wait_ns)
		stats->max_wait_ns = wait;
	return 0;
}

SEC("raw_tp/contention_begin")
int BPF_PROG(contention_begin, void *lock, unsigned int flags)
{
	return open_contention(ctx, (__u64)lock, flags, 0);
}

SEC("raw_tp/contention_end")
int BPF_PROG(contention_end, void *lock, int ret)
{
	return close_contention((__u64)lock);
}

// Kernels without the lock tracepoints (before 5.19): the slow paths every contended lock
// goes through, entered with the lock as first argument, as klockstat traces them. Each
// program is attached to every variant present (killable, interruptible, pv).
SEC("kprobe")
int BPF_KPROBE(mutex_slow_path, void *lock)
{
	return open_contention(ctx, (__u64)lock, LCB_F_MUTEX, 1);
}

SEC("kprobe")
int BPF_KPROBE(rwsem_read_slow_path, void *sem)
{
	return open_contention(ctx, (__u64)sem, LCB_F_READ, 1);
}

SEC("kprobe")
int BPF_KPROBE(rwsem_write_slow_path, void *sem)
{
	return open_contention(ctx, (__u64)sem, LCB_F_WRITE, 1);
}

SEC("kprobe")
int BPF_KPROBE(spin_slow_path, void *lock)
{
	return open_contention(ctx, (__u64)lock, LCB_F_SPIN, 0);
}

SEC("kretprobe")
int BPF_KRETPROBE(slow_path_return)
{
	return close_contention(0);
}

SEC("kprobe/mutex_lock")
int BPF_KPROBE(mutex_lock, void *lock)
{
	if (epmutex_address && (__u64)lock == epmutex_address)
		__sync_fetch_and_add(&epmutex_acquisitions, 1);
	return 0;
}

static __always_inline int is_target(void)
{
	char comm[TASK_COMM_LEN];
	if (bpf_get_current_comm(comm, sizeof(comm)))
		return 0;
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != target_comm[i])
			return 0;
		if (comm[i] == 0)
			return 1;
	}
	return 1;
}

SEC("kprobe/do_epoll_ctl")
int BPF_KPROBE(do_epoll_ctl, int epfd, int op)
{
	if (!is_target())
		return 0;
	// Constant indexes: the verifier cannot follow a bound checked before the call above.
	switch (op) {
	case 1:
		__sync_fetch_and_add(&epoll_ctl_calls[1], 1);
		break;
	case 2:
		__sync_fetch_and_add(&epoll_ctl_calls[2], 1);
		break;
	case 3:
		__sync_fetch_and_add(&epoll_ctl_calls[3], 1);
		break;
	}
	return 0;
}

SEC("kprobe/do_epoll_wait")
int BPF_KPROBE(do_epoll_wait)
{
	if (is_target())
		__sync_fetch_and_add(&epoll_wait_calls, 1);
	return 0;
}

// The kernel lets only GPL-compatible programs walk stacks (bpf_get_stackid).
char LICENSE[] SEC("license") = "Dual BSD/GPL";
