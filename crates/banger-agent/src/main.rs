//! banger-agent: runs in every banger guest (systemd unit `banger-agent.service`) and answers
//! the host on vsock port 1024: health, listening ports, stats, poweroff. One JSON request
//! line per connection, one JSON response line back. Built static for guests:
//! `RUSTFLAGS='-C target-feature=+crt-static' cargo build -p banger-agent --release
//! --target x86_64-unknown-linux-gnu`.
//!
//! `banger-agent --once REQUEST_JSON` answers one request on stdout (for debugging in a guest).

// The agent logs to the journal through stderr, and `--once` prints its answer on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::time::Duration;

use banger_agent_proto::{
    self as proto, AGENT_PORT, MAX_LINE, PROC_NET_FILES, Proto, Request, Response, Stats,
};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn listeners() -> Vec<proto::Listener> {
    let tables: Vec<(&str, String)> = PROC_NET_FILES
        .iter()
        .map(|f| (*f, read(&format!("/proc/net/{f}"))))
        .collect();
    proto::listeners_from_tables(tables.iter().map(|(f, t)| (*f, t.as_str())))
}

fn stats() -> Result<Stats, String> {
    let load = proto::parse_loadavg(&read("/proc/loadavg")).ok_or("cannot read /proc/loadavg")?;
    let (mem_total_kib, mem_available_kib) = proto::parse_meminfo(&read("/proc/meminfo"));
    let uptime_s = proto::parse_uptime(&read("/proc/uptime")).ok_or("cannot read /proc/uptime")?;
    let fs = rustix::fs::statvfs("/").map_err(|e| format!("statvfs /: {e}"))?;
    let (disk_total_kib, disk_used_kib) = proto::disk_kib(fs.f_frsize, fs.f_blocks, fs.f_bfree);
    Ok(Stats {
        load,
        mem_total_kib,
        mem_available_kib,
        disk_total_kib,
        disk_used_kib,
        uptime_s,
    })
}

fn answer(req: Request) -> Response {
    match req {
        Request::Health => Response::Health {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ssh: listeners()
                .iter()
                .any(|l| l.proto == Proto::Tcp && l.port == 22),
        },
        Request::Ports => Response::Ports {
            listeners: listeners(),
        },
        Request::Stats => match stats() {
            Ok(s) => Response::Stats(s),
            Err(message) => Response::Error { message },
        },
        Request::Poweroff => Response::Ok,
    }
}

fn poweroff() {
    let _ = std::process::Command::new("sync").status();
    let ok = std::process::Command::new("systemctl")
        .args(["--no-block", "poweroff"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = std::process::Command::new("poweroff").arg("-f").status();
    }
}

fn serve_one(stream: &mut (impl std::io::Read + std::io::Write)) -> Option<Request> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(std::io::Read::by_ref(stream).take(MAX_LINE as u64));
    if reader.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    let (resp, req) = match serde_json::from_slice::<Request>(&line) {
        Ok(req) => (answer(req), Some(req)),
        Err(e) => (
            Response::Error {
                message: format!("bad request: {e}"),
            },
            None,
        ),
    };
    let _ = stream.write_all(&proto::encode(&resp));
    let _ = stream.flush();
    req
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, req] = args.as_slice()
        && flag == "--once"
    {
        return match serde_json::from_str::<Request>(req) {
            Ok(r) => {
                print!("{}", String::from_utf8_lossy(&proto::encode(&answer(r))));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("banger-agent: bad request: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, AGENT_PORT);
    let listener = match vsock::VsockListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("banger-agent: cannot listen on vsock port {AGENT_PORT}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "banger-agent {} listening on vsock port {AGENT_PORT}",
        env!("CARGO_PKG_VERSION")
    );
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if serve_one(&mut stream) == Some(Request::Poweroff) {
                drop(stream);
                poweroff();
            }
        });
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_serve_one_answers_each_request_and_rejects_garbage() {
        let mut io = std::io::Cursor::new(b"{\"op\":\"stats\"}\n".to_vec());
        let mut out = Vec::new();
        let mut duplex = Duplex(&mut io, &mut out);
        assert_eq!(serve_one(&mut duplex), Some(Request::Stats));
        match serde_json::from_slice::<Response>(&out).unwrap() {
            Response::Stats(s) => assert!(s.mem_total_kib > 0 && s.disk_total_kib > 0, "{s:?}"),
            other => panic!("{other:?}"),
        }
        let mut io = std::io::Cursor::new(b"nonsense\n".to_vec());
        let mut out = Vec::new();
        assert_eq!(serve_one(&mut Duplex(&mut io, &mut out)), None);
        assert!(matches!(
            serde_json::from_slice::<Response>(&out).unwrap(),
            Response::Error { .. }
        ));
    }

    struct Duplex<'a>(&'a mut std::io::Cursor<Vec<u8>>, &'a mut Vec<u8>);
    impl std::io::Read for Duplex<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl std::io::Write for Duplex<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
