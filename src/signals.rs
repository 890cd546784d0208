//! Ctrl-C and SIGTERM as a flag: long operations (builds) check it and stop cleanly, removing
//! what they made, instead of dying half-way.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Installs the handlers (once) and returns the flag they set.
pub fn interrupt_flag() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is a valid value (no handler, no flags, empty mask).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: `sa_mask` is a valid sigset_t owned by `sa`.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores to an atomic
        // (async-signal-safe), and `sa` is fully initialized.
        unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    }
    &INTERRUPTED
}
