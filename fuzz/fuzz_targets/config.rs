//! config.toml parsing (errors name file, line and key; never a panic).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = banger_config::Config::parse(std::path::Path::new("fuzz.toml"), text) {
            let _ = cfg.stats_poll();
            let _ = cfg.auto_stop_after();
        }
        let _ = banger_config::config::parse_duration(text);
    }
});
