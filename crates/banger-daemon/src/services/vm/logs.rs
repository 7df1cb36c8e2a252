//! `vm logs`: a VM's console or VMM log streamed in chunks (any size; memory stays one chunk),
//! the last N lines with `tail`, and with `follow` what is appended until the VM stops or
//! the client goes away.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use banger_api::frame::MAX_CHUNK_BYTES;
use banger_api::types::{LogSource, VmLogsParams, VmLogsResult};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::{VmError, VmService};
use crate::stream::StreamOut;

/// How often a followed log is checked for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// Where the last `lines` lines of `file` start (a final newline ends the last line, it does
/// not start an empty one). Reads backwards one block at a time.
async fn tail_start(file: &mut tokio::fs::File, lines: u64) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut seen = 0u64;
    let mut skip_final = true;
    let mut block = vec![0u8; 64 << 10];
    while pos > 0 {
        let n = usize::try_from(pos.min(block.len() as u64)).unwrap_or(block.len());
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos)).await?;
        file.read_exact(&mut block[..n]).await?;
        for i in (0..n).rev() {
            if block[i] != b'\n' {
                skip_final = false;
                continue;
            }
            if skip_final {
                skip_final = false;
                continue;
            }
            seen += 1;
            if seen == lines {
                return Ok(pos + i as u64 + 1);
            }
        }
    }
    Ok(0)
}

/// A log file being read from an offset; reopened when it appears or shrinks.
struct Reader {
    path: std::path::PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
}

impl Reader {
    async fn open(path: &Path, tail: Option<u64>) -> Result<Self, VmError> {
        let mut reader = Reader {
            path: path.to_owned(),
            file: None,
            offset: 0,
        };
        reader.reopen().await?;
        if let (Some(file), Some(n)) = (reader.file.as_mut(), tail) {
            reader.offset = tail_start(file, n).await.map_err(VmError::Logs)?;
        }
        Ok(reader)
    }

    async fn reopen(&mut self) -> Result<(), VmError> {
        self.file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(VmError::Logs(e)),
        };
        Ok(())
    }

    /// Sends everything from the offset to the current end; `Ok(false)` when the client
    /// went away.
    async fn drain(
        &mut self,
        stream: &'static str,
        out: &StreamOut,
        sent: &mut u64,
    ) -> Result<bool, VmError> {
        if self.file.is_none() {
            self.reopen().await?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(true);
        };
        let len = file.metadata().await.map_err(VmError::Logs)?.len();
        if len < self.offset {
            // Truncated (a new boot): start over.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))
            .await
            .map_err(VmError::Logs)?;
        let mut buf = vec![0u8; MAX_CHUNK_BYTES];
        loop {
            let n = file.read(&mut buf).await.map_err(VmError::Logs)?;
            if n == 0 {
                return Ok(true);
            }
            if out.send(stream, &buf[..n]).await.is_err() {
                return Ok(false);
            }
            self.offset += n as u64;
            *sent += n as u64;
        }
    }
}

impl VmService {
    /// Streams VM `p.name`'s log to `out` (see the module doc).
    pub async fn logs(&self, p: VmLogsParams, out: &StreamOut) -> Result<VmLogsResult, VmError> {
        let vm = self.get_row(&p.name).await?.vm;
        let file = match p.source {
            LogSource::Console => "console.log",
            LogSource::Vmm => "vmm.log",
        };
        let stream = p.source.as_str();
        let mut reader = Reader::open(&self.vm_dir(&vm.id).join(file), p.tail).await?;
        let mut sent = 0u64;
        loop {
            // Checked before the read, so what the VM wrote before it stopped is sent.
            let running = p.follow && self.vmm_alive(&vm.id);
            if !reader.drain(stream, out, &mut sent).await? || !running {
                break;
            }
            tokio::select! {
                () = out.closed() => break,
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
            }
        }
        Ok(VmLogsResult { bytes: sent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tail_of(text: &str, n: u64) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, text).unwrap();
        let mut f = tokio::fs::File::open(&p).await.unwrap();
        let start = tail_start(&mut f, n).await.unwrap();
        text[usize::try_from(start).unwrap()..].to_owned()
    }

    #[tokio::test]
    async fn test_tail_start_counts_lines_from_the_end() {
        assert_eq!(tail_of("a\nb\nc\n", 2).await, "b\nc\n");
        assert_eq!(tail_of("a\nb\nc", 2).await, "b\nc");
        assert_eq!(tail_of("a\nb\n", 5).await, "a\nb\n");
        assert_eq!(tail_of("a\nb\n", 0).await, "");
        assert_eq!(tail_of("", 3).await, "");
        // Across blocks.
        let long: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail_of(&long, 2).await, "line 49998\nline 49999\n");
    }
}
