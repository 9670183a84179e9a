//! The C allocator's settings (a module of the binary, not of the library: the library forbids
//! `unsafe`, and `mallopt` is a C call). burrow's receive path allocates one buffer per SSH
//! packet (its payload: 32 KiB from OpenSSH, up to 128 KiB from a burrow client; handed to the
//! channel without another copy) and frees it on another thread once the data is written on.
//! glibc's defaults give freed memory at the top of the heap back to the kernel as soon as
//! 128 KiB are free there, and fault it in again (the kernel zeroing every page) for the next
//! packets: profiled on `burrow serve` receiving 1 GiB, page
//! faults were ~15% of its samples, and its CPU per GiB received fell by a third (0.91-1.15 s to
//! 0.60-0.66 s over three runs each) with the settings below.
//!
//! - `M_TRIM_THRESHOLD` 64 MiB: the heap keeps up to 64 MiB free at its top instead of 128 KiB,
//!   so packet buffers are reused, not faulted in again. The cost is resident memory that stays
//!   after a burst, at most that much more than glibc's default would keep.
//! - `M_MMAP_THRESHOLD` 1 MiB: setting the trim threshold turns off glibc's sliding mmap
//!   threshold, which would otherwise rise to keep 256 KiB pump buffers on the heap; allocations
//!   of 1 MiB and more (resumable streams' replay buffers) still get their own mapping and go
//!   back to the kernel when freed.

/// Heap bytes kept free at the top before they are given back to the kernel.
const TRIM_THRESHOLD: i32 = 64 << 20;
/// Allocations at least this large get their own mapping.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Applies the settings; call once, first thing in `main`. Returns whether glibc took both
/// (other C libraries have no `mallopt`, and then nothing changes).
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_both_settings() {
        assert_eq!(
            super::tune(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
