//! The clock the benchmark helpers share: bench_listener stamps requests with it and
//! ipvs_watch stamps the table changes, so their times compare within one machine.

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}
