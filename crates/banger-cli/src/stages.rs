//! Live stages of an asynchronous operation on stderr: a spinner naming the running stage
//! on a TTY (finished stages stay as lines with their time), plain lines otherwise.

use std::io::IsTerminal as _;
use std::time::Duration;

use banger_api::types::{OpStatus, StageState};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// Renders stage updates.
pub(crate) struct StageUi {
    bar: Option<ProgressBar>,
    /// Stages already reported as finished.
    finished: usize,
    /// The running stage last shown.
    running: Option<String>,
    /// Its detail last shown.
    detail: Option<String>,
}

fn hint_for(stage: &str) -> &'static str {
    match stage {
        "image" => " (the first use builds the default kernel and image: a few minutes)",
        "boot" => " (waiting for ssh)",
        "kernel" => " (the first use imports the distro kernel)",
        _ => "",
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl StageUi {
    /// A spinner when stderr is a terminal.
    pub(crate) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        StageUi {
            bar,
            finished: 0,
            running: None,
            detail: None,
        }
    }

    pub(crate) fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => output::status(text),
        }
    }

    /// Shows what changed since the last update.
    pub(crate) fn update(&mut self, st: &OpStatus) {
        for stage in st.stages.iter().skip(self.finished) {
            match stage.state {
                StageState::Running => {
                    if let Some(bar) = &self.bar
                        && self.running.as_deref() == Some(&stage.name)
                        && st.detail != self.detail
                    {
                        self.detail.clone_from(&st.detail);
                        bar.set_message(format!(
                            "{} {}",
                            stage.name,
                            st.detail.as_deref().unwrap_or_default()
                        ));
                    }
                    if self.running.as_deref() != Some(&stage.name) {
                        self.detail = None;
                        self.running = Some(stage.name.clone());
                        match &self.bar {
                            Some(bar) => {
                                bar.set_message(format!("{}{}", stage.name, hint_for(&stage.name)));
                                bar.reset_elapsed();
                            }
                            None if !hint_for(&stage.name).is_empty() => output::status(&format!(
                                "{}...{}",
                                stage.name,
                                hint_for(&stage.name)
                            )),
                            None => {}
                        }
                    }
                    break;
                }
                StageState::Done => {
                    self.line(&format!(
                        "  ✓ {:<14} {}",
                        stage.name,
                        secs(stage.elapsed_ms)
                    ));
                }
                StageState::Failed => {
                    self.line(&format!(
                        "  ✗ {:<14} {}",
                        stage.name,
                        secs(stage.elapsed_ms)
                    ));
                }
            }
            self.finished += 1;
        }
    }

    /// Removes the spinner.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Follows an asynchronous operation until it is done: stages on stderr, Ctrl-C cancels it
/// (the daemon undoes what it made). Returns the final status.
pub(crate) async fn follow<S, C>(
    layout: &banger_config::Layout,
    mut conn: crate::connect::Connection,
    op_id: String,
) -> anyhow::Result<banger_api::types::OpStatus>
where
    S: banger_api::methods::Method<
            Params = banger_api::types::OpStatusParams,
            Result = banger_api::types::OpStatus,
        >,
    C: banger_api::methods::Method<
            Params = banger_api::types::OpRef,
            Result = banger_api::types::OpStatus,
        >,
{
    let mut ui = StageUi::new();
    let mut seen = 0;
    let mut cancelled = false;
    let status = loop {
        let poll = banger_api::types::OpStatusParams {
            op_id: op_id.clone(),
            seen,
            wait_ms: 1000,
        };
        let st = tokio::select! {
            st = conn.client.call::<S>(&poll) => st?,
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                // The interrupted call leaves this connection mid-response: use a new one.
                cancelled = true;
                ui.line("cancelling; undoing what was created...");
                conn = crate::connect::connect(layout).await?;
                conn.client.call::<C>(&banger_api::types::OpRef { op_id: op_id.clone() }).await?
            }
        };
        ui.update(&st);
        seen = st.events;
        if st.done {
            break st;
        }
    };
    ui.finish();
    Ok(status)
}
