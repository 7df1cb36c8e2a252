//! The /proc parsers the agent runs in the guest and the host runs on the ssh fallback's
//! output (which the guest controls).
#![no_main]
use banger_agent_proto as p;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for proto in [p::Proto::Tcp, p::Proto::Udp] {
        for v6 in [false, true] {
            let _ = p::parse_proc_net(proto, v6, text);
        }
    }
    let _ = p::parse_loadavg(text);
    let _ = p::parse_meminfo(text);
    let _ = p::parse_uptime(text);
    let _ = p::parse_statfs(text);
    let _ = p::parse_fallback(text);
});
