//! banger-agent: runs in every banger guest (systemd unit `banger-agent.service`) and answers
//! the host on vsock port 1024: health, listening ports, stats, poweroff, exec. One JSON
//! request line per connection, one JSON response line back (exec: binary frames, see
//! `banger_agent_proto::exec`). Built static for guests:
//! `RUSTFLAGS='-C target-feature=+crt-static' cargo build -p banger-agent --release
//! --target x86_64-unknown-linux-gnu`.
//!
//! `banger-agent --once REQUEST_JSON` answers one request on stdout (for debugging in a guest).

// The agent logs to the journal through stderr, and `--once` prints its answer on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod exec;
mod identity;
mod netconf;

use std::io::{BufRead as _, BufReader, Read as _};
use std::time::Duration;

use banger_agent_proto::mux::{Mux, PORT_NAME, Role};
use banger_agent_proto::{
    self as proto, AGENT_PORT, AGENT_PROTOCOL, MAX_LINE, PROC_NET_FILES, Proto, Request, Response,
    Stats,
};
use exec::Conn;

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

fn answer(req: &Request) -> Response {
    match req {
        Request::Health => Response::Health {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: AGENT_PROTOCOL,
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
        Request::Reidentify(id) => match identity::apply(id) {
            Ok(()) => Response::Ok,
            Err(message) => Response::Error { message },
        },
        Request::Exec(_) => Response::Error {
            message: "exec needs a connection of its own".into(),
        },
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

/// Reads the request line; returns it with any bytes read past it (the start of an exec's
/// frames).
fn read_request(stream: &mut impl std::io::Read) -> Option<(Result<Request, String>, Vec<u8>)> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(std::io::Read::by_ref(stream).take(MAX_LINE as u64));
    if reader.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    let early = reader.buffer().to_vec();
    let req = serde_json::from_slice::<Request>(&line).map_err(|e| format!("bad request: {e}"));
    Some((req, early))
}

/// Serves one connection: one request and its answer, or an exec.
fn serve_conn<C: Conn>(mut stream: C) {
    stream.read_timeout(Some(Duration::from_secs(10)));
    let Some((req, early)) = read_request(&mut stream) else {
        return;
    };
    let resp = match &req {
        Ok(Request::Exec(spec)) => return exec::serve(stream, spec, early),
        Ok(r) => answer(r),
        Err(message) => Response::Error {
            message: message.clone(),
        },
    };
    let _ = stream.write_all(&proto::encode(&resp));
    let _ = stream.flush();
    if req == Ok(Request::Poweroff) {
        drop(stream);
        poweroff();
    }
}

/// The agent's virtio-serial port (`/dev/vportNpM` named [`PORT_NAME`]), when the VMM
/// gives one (QEMU); waits up to 5 s for udev-less guests whose driver loads late.
fn find_serial_port() -> Option<std::path::PathBuf> {
    for _ in 0..50 {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let name = read(&e.path().join("name").display().to_string());
                if name.trim() == PORT_NAME {
                    return Some(std::path::Path::new("/dev").join(e.file_name()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Serves agent connections multiplexed over the serial port, for good (a host that goes
/// away and comes back — a restored snapshot — resets the connections; see
/// `banger_agent_proto::mux`). Returns when there is no port.
fn serve_serial() {
    let Some(path) = find_serial_port() else {
        return;
    };
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
    };
    let (reader, writer) = match open().and_then(|f| Ok((f.try_clone()?, f))) {
        Ok(rw) => rw,
        Err(e) => {
            eprintln!("banger-agent: cannot open {}: {e}", path.display());
            return;
        }
    };
    eprintln!(
        "banger-agent {} serving the serial port {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    let mux = Mux::new(
        Role::Guest,
        Box::new(writer),
        Some(Box::new(|port, stream| {
            if port == AGENT_PORT {
                std::thread::spawn(move || serve_conn(stream));
            }
        })),
    );
    let _ = mux.hello();
    loop {
        // `run` returns when the host end is closed (reads give EOF); it may come back.
        mux.run(&reader);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, req] = args.as_slice()
        && flag == "--once"
    {
        return match serde_json::from_str::<Request>(req) {
            Ok(r) => {
                print!("{}", String::from_utf8_lossy(&proto::encode(&answer(&r))));
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("banger-agent: bad request: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let serial = std::thread::spawn(serve_serial);
    let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, AGENT_PORT);
    match vsock::VsockListener::bind(&addr) {
        Ok(listener) => {
            eprintln!(
                "banger-agent {} listening on vsock port {AGENT_PORT}",
                env!("CARGO_PKG_VERSION")
            );
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                std::thread::spawn(move || serve_conn(stream));
            }
        }
        Err(e) => eprintln!("banger-agent: no vsock ({e})"),
    }
    if serial.join().is_err() {
        return std::process::ExitCode::FAILURE;
    }
    eprintln!("banger-agent: neither vsock nor the serial port {PORT_NAME} is there");
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    fn ask(request: &[u8]) -> Response {
        let (mut host, agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_conn(agent));
        host.write_all(request).unwrap();
        let mut out = Vec::new();
        host.read_to_end(&mut out).unwrap();
        t.join().unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn test_each_request_is_answered_and_garbage_rejected() {
        match ask(b"{\"op\":\"stats\"}\n") {
            Response::Stats(s) => assert!(s.mem_total_kib > 0 && s.disk_total_kib > 0, "{s:?}"),
            other => panic!("{other:?}"),
        }
        match ask(b"{\"op\":\"health\"}\n") {
            Response::Health { protocol, .. } => assert_eq!(protocol, AGENT_PROTOCOL),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ask(b"nonsense\n"), Response::Error { .. }));
    }

    #[test]
    fn test_exec_frames_sent_with_the_request_are_not_lost() {
        use banger_agent_proto::exec::{ExitStatus, GuestFrame, HostFrame};
        let (mut host, agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_conn(agent));
        let mut msg = proto::encode(&Request::Exec(proto::ExecSpec {
            argv: vec!["cat".into()],
            env: vec![],
            cwd: None,
            tty: None,
        }));
        HostFrame::Stdin(b"early bytes".to_vec())
            .write(&mut msg)
            .unwrap();
        HostFrame::StdinClose.write(&mut msg).unwrap();
        host.write_all(&msg).unwrap();
        assert_eq!(
            GuestFrame::read(&mut host).unwrap(),
            GuestFrame::Stdout(b"early bytes".to_vec())
        );
        assert_eq!(
            GuestFrame::read(&mut host).unwrap(),
            GuestFrame::Exit(ExitStatus::Code(0))
        );
        t.join().unwrap();
    }
}
