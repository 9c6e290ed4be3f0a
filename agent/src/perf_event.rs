//! The perf events the CPU profile samples with, which neither `nix` nor libbpf-rs opens. The
//! agent's one module allowed `unsafe`: one system call given a pointer to a local attribute
//! record and that record's size, and the hand-over of its descriptor to libbpf.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use nix::libc;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// `perf_event_attr.freq`: `sample_freq` is a frequency, not a period.
const ATTR_FREQ: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr` as of `PERF_ATTR_SIZE_VER5` (Linux 4.1): every kernel takes a
/// record of this size, and the fields after it stay zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_freq: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

/// A `cpu-clock` event sampling every task on `cpu` at `frequency_hz`: a software timer, so
/// it works where hardware counters are absent (virtual machines, this lab's hosts).
pub(crate) fn cpu_clock_sampler(cpu: u32, frequency_hz: u32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_freq: frequency_hz.into(),
        flags: ATTR_FREQ,
        ..PerfEventAttr::default()
    };
    let cpu = libc::c_int::try_from(cpu).map_err(std::io::Error::other)?;
    // SAFETY: the pointer is to a live, initialised record whose `size` field states its size;
    // the kernel only reads it. The other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches `program` to the event: the link then owns the descriptor and closes it when
/// dropped. On failure the descriptor is closed here, since libbpf leaves it to the caller.
pub fn attach(
    program: &libbpf_rs::ProgramMut<'_>,
    event: OwnedFd,
) -> libbpf_rs::Result<libbpf_rs::Link> {
    let raw = event.into_raw_fd();
    program.attach_perf_event(raw).inspect_err(|_| {
        // SAFETY: libbpf did not take the descriptor on failure; it is still ours alone.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_attribute_record_has_the_size_the_kernel_expects() {
        // PERF_ATTR_SIZE_VER5
        assert_eq!(std::mem::size_of::<super::PerfEventAttr>(), 112);
    }
}
