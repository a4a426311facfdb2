//! The process's memory allocator: jemalloc, or the C library's malloc when the environment says
//! `ATTESTD_ALLOCATOR=system`.
//!
//! jemalloc takes less CPU than glibc's malloc on attestd's request and job paths (see
//! docs/PERFORMANCE.md). The `policy-eval` child is started with the system allocator, so that an
//! infinitely recursive policy always ends it with a stack overflow reported as one: in a debug
//! build (the test suite's), jemalloc's unoptimized C code made the child die of a plain SIGSEGV
//! instead, likely a frame of it stepping over the thread's one-page stack guard, which Rust's
//! overflow report relies on. Release builds reported the overflow with either allocator.
//!
//! The choice is made at the first allocation, from the environment the process started with, and
//! never changes, so every block is freed by the allocator that gave it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

use tikv_jemallocator::Jemalloc;

/// The environment variable that chooses the allocator: `jemalloc` (the default) or `system`.
pub const ENV: &str = "ATTESTD_ALLOCATOR";
const ENV_C: &CStr = c"ATTESTD_ALLOCATOR";

const UNDECIDED: u8 = 0;
const JEMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

pub struct Allocator;

#[inline]
fn system() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        JEMALLOC => false,
        SYSTEM => true,
        _ => decide(),
    }
}

#[cold]
fn decide() -> bool {
    // SAFETY: `getenv` does not allocate, and attestd never changes its environment, so the
    // pointer it returns stays valid while it is read. Threads racing here read the same value.
    let system = unsafe {
        let value = libc::getenv(ENV_C.as_ptr());
        !value.is_null() && CStr::from_ptr(value) == c"system"
    };
    CHOICE.store(if system { SYSTEM } else { JEMALLOC }, Ordering::Relaxed);
    system
}

/// An error naming the valid values when `ATTESTD_ALLOCATOR` is set to something else (checked at
/// start-up, where it can be reported; the allocator itself cannot).
pub fn check_env() -> Result<(), String> {
    match std::env::var(ENV) {
        Err(_) => Ok(()),
        Ok(v) if v == "jemalloc" || v == "system" => Ok(()),
        Ok(v) => Err(format!(
            "{ENV}={v:?} is not an allocator attestd has: use \"jemalloc\" (the default) or \"system\""
        )),
    }
}

/// The allocator every call goes to: always the same one for the process's life (see `decide`).
#[inline]
fn chosen() -> &'static dyn GlobalAlloc {
    if system() { &System } else { &Jemalloc }
}

// SAFETY: every call goes to `chosen()`, so a block is freed or resized by the allocator that
// allocated it, under that allocator's own contract.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { chosen().alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { chosen().alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { chosen().dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { chosen().realloc(ptr, layout, new_size) }
    }
}
