//! Host primitives for banger: every side effect on the host goes through a trait here,
//! with a real implementation and a recording fake for tests.

pub mod agentmux;
pub mod cgroup;
pub mod clock;
pub mod disk;
pub mod exec;
pub mod guest;
pub mod helper;
pub mod ifname;
pub mod kvm;
pub mod nat;
pub mod privileged;
pub mod probe;
pub mod process;
pub mod qcow2;
pub mod runner;
pub mod sshkey;
pub mod vmm;
pub mod workspace;

pub use clock::{Clock, FakeClock, SystemClock};
pub use guest::{
    FakeGuest, Feed, GuestAddr, GuestControl, GuestError, GuestIoError, Listener, Proto, Ready,
    Sink, SshGuest, Stats,
};
pub use privileged::{
    FakePrivileged, InProcessPrivileged, PrivError, PrivilegedOps, ResolverRouting, TapLink,
};
pub use probe::{FakeProbe, HostProbe, RealProbe};
pub use runner::{Cmd, CmdOutput, CommandRunner, RealRunner, RecordingRunner, RunError};
