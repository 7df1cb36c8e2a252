//! The MCP tools: verb-named, each a thin, checked call to `bangerd`. Every failure comes
//! back as a tool result with `isError`, banger's error code, the cause and a remediation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_api::Client;
use banger_api::methods::{
    ImageList, SnapshotShow, VmCreate, VmDelete, VmFork, VmList, VmLogsGet, VmPortsGet, VmShow,
    VmSnapshot, VmStop, VmWorkspaceExport, VmWorkspacePrepare,
};
use banger_api::types::{
    Empty, NameParams, VmCreateParams, VmForkParams, VmInfo, VmLogsParams, VmRef, VmRefs,
    VmSnapshotParams, WorkspaceExportParams, WorkspacePrepareParams,
};
use banger_config::McpConfig;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ToolError;
use crate::limits::{Ask, ORIGIN_KEY, ORIGIN_MCP, check_create};
use crate::run::{Command, clip, run};

/// Most bytes of a file `sandbox_read_file` returns by default.
const READ_DEFAULT: u64 = 256 << 10;
/// Most bytes of each output `sandbox_exec` returns by default.
const OUTPUT_DEFAULT: u64 = 64 << 10;
/// Hard cap of any one returned text.
const OUTPUT_CAP: u64 = 4 << 20;

/// Where the server reaches banger and what it may do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// `[mcp]` limits.
    pub limits: McpConfig,
    /// The image used when none is named.
    pub default_image: String,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    /// Sandboxes this server created (deleted at the end in `--ephemeral` mode).
    created: Mutex<Vec<String>>,
}

/// banger's MCP server. Cloning shares its state (one per HTTP session, one for stdio).
#[derive(Debug, Clone)]
pub struct Banger {
    inner: Arc<Inner>,
    tool_router: ToolRouter<Self>,
}

/// `sandbox_create`'s input.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// Name (1-63 characters of a-z, 0-9 and '-'); generated when omitted. The sandbox is
    /// reachable from the host as NAME.vm.
    #[serde(default)]
    pub name: Option<String>,
    /// Image name or OCI reference (default: the configured default image). `image_list`
    /// shows the stored images.
    #[serde(default)]
    pub image: Option<String>,
    /// Virtual CPUs.
    #[serde(default)]
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Let the sandbox reach the internet through the host (only when the user allows it).
    #[serde(default)]
    pub nat: bool,
    /// Copy the user's configured workspace (a git work tree) to /root/repo; commands then
    /// run there by default.
    #[serde(default)]
    pub workspace: bool,
    /// Start from this snapshot (`sandbox_snapshot` makes one) instead of booting: its
    /// image, vCPUs, memory, files and running processes, with a new name and address.
    #[serde(default)]
    pub from_snapshot: Option<String>,
}

/// `sandbox_snapshot`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// Sandbox name (created over MCP).
    pub sandbox: String,
    /// The snapshot's name; generated when omitted.
    #[serde(default)]
    pub name: Option<String>,
}

/// `sandbox_fork`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkParams {
    /// Sandbox name (created over MCP, running).
    pub sandbox: String,
    /// How many copies (1-16, within [mcp] max_sandboxes).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// A sandbox, by name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxRef {
    /// Sandbox name (`sandbox_list` shows them).
    pub sandbox: String,
}

/// `sandbox_exec`'s input.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Sandbox name.
    pub sandbox: String,
    /// A shell command line, run with `sh -c` (give this or `argv`).
    #[serde(default)]
    pub command: Option<String>,
    /// Program and arguments, run without a shell (give this or `command`).
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Working directory (default: the workspace, else /root).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text for the command's stdin (default: empty).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command after this many seconds (default: the configured exec timeout).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Most bytes of stdout and of stderr returned (default 65536); the rest is counted.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
}

/// `sandbox_read_file`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileParams {
    /// Sandbox name.
    pub sandbox: String,
    /// File path in the sandbox (relative: to the workspace, else /root).
    pub path: String,
    /// Most bytes returned (default 262144).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// `sandbox_write_file`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileParams {
    /// Sandbox name.
    pub sandbox: String,
    /// File path in the sandbox; missing parent directories are created.
    pub path: String,
    /// The file's content.
    pub content: String,
    /// `utf-8` (default) or `base64` (for binary content).
    #[serde(default)]
    pub encoding: Option<String>,
    /// Octal permission bits, e.g. `755`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `sandbox_list_dir`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDirParams {
    /// Sandbox name.
    pub sandbox: String,
    /// Directory path (default: the workspace, else /root).
    #[serde(default)]
    pub path: Option<String>,
}

/// `sandbox_logs`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    /// Sandbox name.
    pub sandbox: String,
    /// Only the last N lines of the serial console (default 200).
    #[serde(default)]
    pub tail_lines: Option<u64>,
}

/// `sandbox_workspace_export`'s input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Sandbox name.
    pub sandbox: String,
    /// Most bytes of the patch returned (default 1048576).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

// The tool macros want `Result<_, ErrorData>`; every failure here is a tool-level error.
#[allow(clippy::unnecessary_wraps)]
fn done(r: Result<Value, ToolError>) -> Result<CallToolResult, ErrorData> {
    Ok(match r {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => e.into_result(),
    })
}

fn sandbox_json(vm: &VmInfo) -> Value {
    json!({
        "name": vm.name,
        "state": vm.state,
        "image": vm.image,
        "ip": vm.guest_ip,
        "dns": format!("{}.vm", vm.name),
        "vcpu": vm.vcpu,
        "memory_mib": vm.memory_mib,
        "nat": vm.nat,
        "workspace": vm.workspace.as_ref().and_then(|w| w.get("guest_path")).cloned(),
        "created_by_mcp": is_mcp(vm),
    })
}

fn is_mcp(vm: &VmInfo) -> bool {
    vm.labels.get(ORIGIN_KEY).map(String::as_str) == Some(ORIGIN_MCP)
}

fn bad(message: impl Into<String>, hint: &str) -> ToolError {
    ToolError::new("bad_request", message, hint)
}

const SANDBOX_HINT: &str = "`sandbox_list` shows the sandboxes that exist";

impl Banger {
    /// A server over `settings`.
    pub fn new(settings: Settings) -> Self {
        Banger {
            inner: Arc::new(Inner {
                settings,
                created: Mutex::default(),
            }),
            tool_router: Self::tool_router(),
        }
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    async fn client(&self) -> Result<Client, ToolError> {
        Ok(Client::connect(&self.settings().socket).await?)
    }

    async fn show(&self, name: &str) -> Result<VmInfo, ToolError> {
        let mut c = self.client().await?;
        c.call::<VmShow>(&VmRef {
            name: name.to_owned(),
        })
        .await
        .map_err(|e| ToolError::from(e).not_found_hint(SANDBOX_HINT))
    }

    /// Only sandboxes created over MCP may be stopped or deleted through it.
    async fn own(&self, name: &str) -> Result<VmInfo, ToolError> {
        let vm = self.show(name).await?;
        if !is_mcp(&vm) {
            return Err(ToolError::new(
                "forbidden",
                format!("{name:?} was not created over MCP; it belongs to the user"),
                "only sandboxes made with `sandbox_create` can be stopped or deleted here",
            ));
        }
        Ok(vm)
    }

    /// Deletes every sandbox this server created (the `--ephemeral` end of a session).
    pub async fn delete_created(&self) -> Vec<String> {
        let names: Vec<String> = std::mem::take(
            &mut *self
                .inner
                .created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if names.is_empty() {
            return names;
        }
        if let Ok(mut c) = self.client().await {
            let _ = c
                .call::<VmDelete>(&VmRefs {
                    names: names.clone(),
                })
                .await;
        }
        names
    }

    /// Runs lifecycle method `M` on an MCP sandbox; returns its name.
    async fn lifecycle<M>(&self, sandbox: &str) -> Result<String, ToolError>
    where
        M: banger_api::Method<Params = VmRefs, Result = banger_api::types::VmOpResult>,
    {
        let vm = self.own(sandbox).await?;
        let mut c = self.client().await?;
        let r = c
            .call::<M>(&VmRefs {
                names: vec![vm.name.clone()],
            })
            .await?;
        if let Some(e) = r.outcomes.into_iter().find_map(|o| o.error) {
            return Err(banger_api::ClientError::Rpc(e).into());
        }
        Ok(vm.name)
    }

    async fn exec_in(&self, sandbox: &str, cmd: Command) -> Result<crate::run::Ran, ToolError> {
        run(&self.settings().socket, sandbox, cmd).await
    }

    fn command(&self, argv: Vec<String>, stdin: Option<Vec<u8>>, max: u64) -> Command {
        Command {
            argv,
            stdin,
            timeout_secs: self.settings().limits.exec_timeout_secs,
            max_output: usize::try_from(max.min(OUTPUT_CAP)).unwrap_or(usize::MAX),
            ..Command::default()
        }
    }

    async fn create_impl(&self, p: CreateParams) -> Result<Value, ToolError> {
        let limits = &self.settings().limits;
        let mut c = self.client().await?;
        // From a snapshot, its sizes are what the limits see.
        let (mut vcpu, mut memory_mib, mut image) = (p.vcpu, p.memory_mib, p.image.clone());
        if let Some(s) = &p.from_snapshot {
            if p.vcpu.is_some() || p.memory_mib.is_some() || p.image.is_some() {
                return Err(bad(
                    "a sandbox from a snapshot has the snapshot's image, vcpu and memory",
                    "leave image, vcpu and memory_mib out with from_snapshot",
                ));
            }
            let snap = c
                .call::<SnapshotShow>(&NameParams { name: s.clone() })
                .await
                .map_err(|e| {
                    ToolError::from(e).not_found_hint("`sandbox_snapshot` makes a snapshot")
                })?;
            (vcpu, memory_mib, image) = (Some(snap.vcpu), Some(snap.memory_mib), Some(snap.image));
        }
        let existing = c
            .call::<VmList>(&Empty {})
            .await?
            .vms
            .iter()
            .filter(|v| is_mcp(v))
            .count();
        check_create(
            limits,
            &Ask {
                image: image.as_deref(),
                vcpu,
                memory_mib,
                nat: p.nat,
                existing,
            },
            &self.settings().default_image,
        )?;
        let workspace = match (p.workspace, &limits.workspace) {
            (false, _) => None,
            (true, Some(ws)) => Some(ws.display().to_string()),
            (true, None) => {
                return Err(ToolError::new(
                    "forbidden",
                    "no workspace is configured for MCP sandboxes",
                    "create without workspace; the user can set [mcp] workspace = \"/path/to/repo\" in config.toml",
                ));
            }
        };
        let vm = c
            .call::<VmCreate>(&VmCreateParams {
                name: p.name,
                memory_mib: match &p.from_snapshot {
                    None => p.memory_mib.or(Some(1024.min(limits.max_memory_mib))),
                    Some(_) => None,
                },
                image: p.image,
                vcpu: p.vcpu,
                nat: p.nat,
                labels: [(ORIGIN_KEY.to_owned(), ORIGIN_MCP.to_owned())].into(),
                from_snapshot: p.from_snapshot,
                ..VmCreateParams::default()
            })
            .await
            .map_err(|e| {
                let e = ToolError::from(e);
                if e.message.contains("image") {
                    e.not_found_hint("`image_list` shows the images that exist")
                } else {
                    e
                }
            })?;
        self.inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(vm.name.clone());
        if let Some(path) = workspace {
            c.call::<VmWorkspacePrepare>(&WorkspacePrepareParams {
                name: vm.name.clone(),
                path,
                ..WorkspacePrepareParams::default()
            })
            .await?;
        }
        Ok(sandbox_json(&self.show(&vm.name).await?))
    }

    async fn exec_impl(&self, p: ExecParams) -> Result<Value, ToolError> {
        let argv = match (p.command, p.argv) {
            (Some(c), None) => vec!["sh".to_owned(), "-c".to_owned(), c],
            (None, Some(a)) if !a.is_empty() => a,
            _ => {
                return Err(bad(
                    "give exactly one of command (a shell line) and argv (a non-empty list)",
                    "e.g. {\"command\": \"make test\"} or {\"argv\": [\"ls\", \"-la\"]}",
                ));
            }
        };
        let mut cmd = self.command(
            argv,
            p.stdin.map(String::into_bytes),
            p.max_output_bytes.unwrap_or(OUTPUT_DEFAULT),
        );
        cmd.cwd = p.cwd;
        cmd.env = p.env;
        if let Some(t) = p.timeout_secs {
            cmd.timeout_secs = t.max(1);
        }
        let timeout = cmd.timeout_secs;
        let r = self.exec_in(&p.sandbox, cmd).await?;
        Ok(json!({
            "exit_code": r.code(),
            "signal": r.signal,
            "timed_out": r.timed_out,
            "timeout_secs": timeout,
            "stdout": clip(&r.stdout, r.stdout_bytes),
            "stderr": clip(&r.stderr, r.stderr_bytes),
            "stdout_bytes": r.stdout_bytes,
            "stderr_bytes": r.stderr_bytes,
            "truncated": r.stdout_bytes > r.stdout.len() as u64 || r.stderr_bytes > r.stderr.len() as u64,
        }))
    }

    async fn read_impl(&self, p: ReadFileParams) -> Result<Value, ToolError> {
        let max = p.max_bytes.unwrap_or(READ_DEFAULT).min(OUTPUT_CAP);
        let script = r#"[ -f "$1" ] || { echo "$1: no such regular file" >&2; exit 2; }
stat -c %s -- "$1" >&2; head -c "$2" -- "$1""#;
        let argv = ["sh", "-c", script, "read", &p.path, &max.to_string()]
            .map(str::to_owned)
            .to_vec();
        let r = self
            .exec_in(&p.sandbox, self.command(argv, None, max))
            .await?;
        if r.code() != 0 {
            return Err(ToolError::new(
                "not_found",
                r.stderr_text(),
                "`sandbox_list_dir` shows what is there",
            ));
        }
        let size: u64 = r.stderr_text().parse().unwrap_or(r.stdout_bytes);
        let (content, encoding) = match String::from_utf8(r.stdout.clone()) {
            Ok(text) => (text, "utf-8"),
            Err(_) => {
                use base64::Engine as _;
                (
                    base64::engine::general_purpose::STANDARD.encode(&r.stdout),
                    "base64",
                )
            }
        };
        Ok(json!({
            "path": p.path,
            "size": size,
            "content": content,
            "encoding": encoding,
            "truncated": size > r.stdout.len() as u64,
        }))
    }

    async fn write_impl(&self, p: WriteFileParams) -> Result<Value, ToolError> {
        let bytes = match p.encoding.as_deref() {
            None | Some("utf-8" | "utf8") => p.content.into_bytes(),
            Some("base64") => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(p.content.trim())
                    .map_err(|e| {
                        bad(
                            format!("content is not base64: {e}"),
                            "send standard base64, or encoding utf-8",
                        )
                    })?
            }
            Some(other) => {
                return Err(bad(
                    format!("unknown encoding {other:?}"),
                    "use \"utf-8\" or \"base64\"",
                ));
            }
        };
        let mode = p.mode.unwrap_or_default();
        if !mode.is_empty() && (mode.len() > 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        {
            return Err(bad(
                format!("mode {mode:?} is not octal"),
                "e.g. \"644\" or \"755\"",
            ));
        }
        let len = bytes.len();
        let script = r#"set -e
mkdir -p -- "$(dirname -- "$1")"
cat > "$1"
[ -z "$2" ] || chmod "$2" -- "$1""#;
        let argv = ["sh", "-c", script, "write", &p.path, &mode]
            .map(str::to_owned)
            .to_vec();
        let r = self
            .exec_in(&p.sandbox, self.command(argv, Some(bytes), OUTPUT_DEFAULT))
            .await?;
        if r.code() != 0 {
            return Err(ToolError::new(
                "operation_failed",
                format!("cannot write {}: {}", p.path, r.stderr_text()),
                "check the path with `sandbox_list_dir`",
            ));
        }
        Ok(json!({ "path": p.path, "bytes": len }))
    }

    async fn list_dir_impl(&self, p: ListDirParams) -> Result<Value, ToolError> {
        let path = p.path.unwrap_or_else(|| ".".into());
        let script = r#"cd -- "$1" || exit 2
for f in * .[!.]* ..?*; do
  if [ -e "$f" ] || [ -L "$f" ]; then stat -c '%F|%a|%s|%n' -- "$f"; fi
done"#;
        let argv = ["sh", "-c", script, "ls", &path]
            .map(str::to_owned)
            .to_vec();
        let r = self
            .exec_in(&p.sandbox, self.command(argv, None, OUTPUT_CAP))
            .await?;
        if r.code() != 0 {
            return Err(ToolError::new(
                "not_found",
                format!("cannot list {path}: {}", r.stderr_text()),
                "list the parent directory first",
            ));
        }
        let entries: Vec<Value> = String::from_utf8_lossy(&r.stdout)
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(4, '|');
                let kind = match it.next()? {
                    "directory" => "dir",
                    "regular file" | "regular empty file" => "file",
                    "symbolic link" => "symlink",
                    _ => "other",
                };
                let mode = it.next()?;
                let size: u64 = it.next()?.parse().ok()?;
                Some(json!({"name": it.next()?, "kind": kind, "mode": mode, "size": size}))
            })
            .collect();
        Ok(json!({ "path": path, "entries": entries }))
    }
}

#[tool_router]
impl Banger {
    #[tool(
        description = "Create a sandbox: a fresh Linux microVM with its own filesystem, network and name (NAME.vm), ready for commands. Returns its name and address. Optionally copy the user's configured workspace (a git repo) in."
    )]
    async fn sandbox_create(
        &self,
        Parameters(p): Parameters<CreateParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(self.create_impl(p).await)
    }

    #[tool(
        description = "List sandboxes (every banger VM; created_by_mcp marks yours) with state, image and address."
    )]
    async fn sandbox_list(&self) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let mut c = self.client().await?;
                let vms = c.call::<VmList>(&Empty {}).await?.vms;
                Ok(json!({ "sandboxes": vms.iter().map(sandbox_json).collect::<Vec<_>>() }))
            }
            .await,
        )
    }

    #[tool(
        description = "Run a command in a sandbox (as root, in its workspace or /root): a shell line (`command`) or an argv list. Returns exit_code, stdout, stderr (each truncated past max_output_bytes, with the full byte counts), and timed_out."
    )]
    async fn sandbox_exec(
        &self,
        Parameters(p): Parameters<ExecParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(self.exec_impl(p).await)
    }

    #[tool(
        description = "Read a file from a sandbox. Text comes back as utf-8, anything else as base64; truncated past max_bytes (size says the whole size)."
    )]
    async fn sandbox_read_file(
        &self,
        Parameters(p): Parameters<ReadFileParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(self.read_impl(p).await)
    }

    #[tool(
        description = "Write a file in a sandbox (created or replaced; parent directories made). content is utf-8 text, or base64 with encoding \"base64\"; optional octal mode."
    )]
    async fn sandbox_write_file(
        &self,
        Parameters(p): Parameters<WriteFileParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(self.write_impl(p).await)
    }

    #[tool(
        description = "List a directory in a sandbox: each entry's name, kind (file, dir, symlink, other), octal mode and size."
    )]
    async fn sandbox_list_dir(
        &self,
        Parameters(p): Parameters<ListDirParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(self.list_dir_impl(p).await)
    }

    #[tool(
        description = "List the TCP/UDP ports listening in a sandbox, with the NAME.vm:PORT endpoint the host reaches them at."
    )]
    async fn sandbox_ports(
        &self,
        Parameters(p): Parameters<SandboxRef>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let mut c = self.client().await?;
                let mut out = c
                    .call::<VmPortsGet>(&VmRefs {
                        names: vec![p.sandbox],
                    })
                    .await?;
                let one = out.pop().ok_or_else(|| bad("no answer", "retry"))?;
                if let Some(e) = one.error {
                    return Err(ToolError::from(banger_api::ClientError::Rpc(e))
                        .not_found_hint(SANDBOX_HINT));
                }
                Ok(json!({ "sandbox": one.name, "ports": one.ports }))
            }
            .await,
        )
    }

    #[tool(
        description = "The last lines of a sandbox's serial console log (boot messages, kernel errors)."
    )]
    async fn sandbox_logs(
        &self,
        Parameters(p): Parameters<LogsParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let mut c = self.client().await?;
                let mut text = Vec::new();
                let max = OUTPUT_CAP as usize;
                let r = c
                    .call_streaming::<VmLogsGet>(
                        &VmLogsParams {
                            name: p.sandbox,
                            tail: Some(p.tail_lines.unwrap_or(200)),
                            ..VmLogsParams::default()
                        },
                        &mut |_, bytes| {
                            let room = max.saturating_sub(text.len());
                            text.extend_from_slice(&bytes[..bytes.len().min(room)]);
                            Ok(())
                        },
                    )
                    .await
                    .map_err(|e| ToolError::from(e).not_found_hint(SANDBOX_HINT))?;
                Ok(json!({ "log": clip(&text, r.bytes) }))
            }
            .await,
        )
    }

    #[tool(
        description = "The changes made in a sandbox's workspace since it was created, as a `git apply`-able binary patch (commits and uncommitted work). Truncated past max_bytes."
    )]
    async fn sandbox_workspace_export(
        &self,
        Parameters(p): Parameters<ExportParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let max = usize::try_from(p.max_bytes.unwrap_or(1 << 20).min(OUTPUT_CAP))
                    .unwrap_or(usize::MAX);
                let mut c = self.client().await?;
                let mut patch = Vec::new();
                let mut total = 0u64;
                let r = c
                    .call_streaming::<VmWorkspaceExport>(
                        &WorkspaceExportParams {
                            name: p.sandbox,
                            base_commit: None,
                        },
                        &mut |_, bytes| {
                            total += bytes.len() as u64;
                            let room = max.saturating_sub(patch.len());
                            patch.extend_from_slice(&bytes[..bytes.len().min(room)]);
                            Ok(())
                        },
                    )
                    .await
                    .map_err(|e| ToolError::from(e).not_found_hint(SANDBOX_HINT))?;
                Ok(json!({
                    "base": r.base,
                    "patch": clip(&patch, total),
                    "bytes": total,
                    "truncated": total > patch.len() as u64,
                }))
            }
            .await,
        )
    }

    #[tool(
        description = "Stop a sandbox created over MCP (its disks are kept; it can be deleted afterwards)."
    )]
    async fn sandbox_stop(
        &self,
        Parameters(p): Parameters<SandboxRef>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let name = self.lifecycle::<VmStop>(&p.sandbox).await?;
                Ok(json!({ "sandbox": name, "state": "stopped" }))
            }
            .await,
        )
    }

    #[tool(description = "Delete a sandbox created over MCP, with its disks (irreversible).")]
    async fn sandbox_delete(
        &self,
        Parameters(p): Parameters<SandboxRef>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let name = self.lifecycle::<VmDelete>(&p.sandbox).await?;
                self.inner
                    .created
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|n| n != &name);
                Ok(json!({ "sandbox": name, "deleted": true }))
            }
            .await,
        )
    }

    #[tool(
        description = "Snapshot a running sandbox (paused for the copy): memory, processes and files. `sandbox_create` with `from_snapshot` starts copies of it."
    )]
    async fn sandbox_snapshot(
        &self,
        Parameters(p): Parameters<SnapshotParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let vm = self.own(&p.sandbox).await?;
                let mut c = self.client().await?;
                let s = c
                    .call::<VmSnapshot>(&VmSnapshotParams {
                        name: vm.name,
                        snapshot: p.name,
                    })
                    .await?;
                Ok(json!({ "snapshot": s.name, "from": s.source_vm, "size_bytes": s.size_bytes }))
            }
            .await,
        )
    }

    #[tool(
        description = "Fork a running sandbox: `count` copies that start where it is now (its files and running processes), each with its own name and address; the original keeps running. Try risky changes in a copy."
    )]
    async fn sandbox_fork(
        &self,
        Parameters(p): Parameters<ForkParams>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let vm = self.own(&p.sandbox).await?;
                let limits = &self.settings().limits;
                let mut c = self.client().await?;
                let existing = c
                    .call::<VmList>(&Empty {})
                    .await?
                    .vms
                    .iter()
                    .filter(|v| is_mcp(v))
                    .count();
                if existing + p.count as usize > limits.max_sandboxes as usize {
                    return Err(ToolError::new(
                        "limit_exceeded",
                        format!(
                            "{existing} sandboxes exist and {} more would pass [mcp] max_sandboxes {}",
                            p.count, limits.max_sandboxes
                        ),
                        "delete some with `sandbox_delete`, or fork fewer",
                    ));
                }
                let r = c
                    .call::<VmFork>(&VmForkParams {
                        name: vm.name.clone(),
                        count: p.count,
                        ..VmForkParams::default()
                    })
                    .await?;
                let names: Vec<String> = r.vms.iter().map(|v| v.name.clone()).collect();
                self.inner
                    .created
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(names.iter().cloned());
                Ok(json!({
                    "sandboxes": r.vms.iter().map(sandbox_json).collect::<Vec<_>>(),
                }))
            }
            .await,
        )
    }

    #[tool(description = "List the images sandboxes can be created from.")]
    async fn image_list(&self) -> Result<CallToolResult, ErrorData> {
        done(
            async {
                let mut c = self.client().await?;
                let images = c.call::<ImageList>(&Empty {}).await?;
                let allowed = &self.settings().limits.allowed_images;
                Ok(json!({
                    "images": images.iter().map(|i| json!({
                        "name": i.name,
                        "source": i.source,
                        "allowed": allowed.is_empty() || allowed.contains(&i.name),
                    })).collect::<Vec<_>>(),
                    "default": self.settings().default_image,
                }))
            }
            .await,
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Banger {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("banger", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "banger gives you local Linux sandboxes (microVMs) on the user's machine. \
                 Create one with sandbox_create, run commands with sandbox_exec, move files \
                 with sandbox_read_file / sandbox_write_file, take workspace changes back \
                 with sandbox_workspace_export, and sandbox_delete it when done. Errors carry \
                 a code and a hint saying what to do next.",
            )
    }
}
