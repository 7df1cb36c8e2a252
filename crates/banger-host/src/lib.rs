//! Host primitives for banger: every side effect on the host goes through a trait here,
//! with a real implementation and a recording fake for tests.

pub mod clock;

pub use clock::{Clock, FakeClock, SystemClock};
