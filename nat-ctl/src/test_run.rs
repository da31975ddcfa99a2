//! BPF_PROG_TEST_RUN of a raw tracepoint program held by its fd: how the sweeper runs its
//! walk of the session table (nat_common::expiry), a program that is never attached. aya runs
//! a program only through the object that loaded it, which the sweeper's thread does not
//! have.

use std::os::fd::{AsRawFd as _, BorrowedFd};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of union bpf_attr.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs raw tracepoint program `prog` once, with no arguments (the walk reads its orders
/// from a map), on this CPU; returns the program's return value.
pub fn run_once(prog: BorrowedFd<'_>) -> std::io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_TEST_RUN with no buffers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.retval)
}
