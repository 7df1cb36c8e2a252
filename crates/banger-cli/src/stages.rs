//! Live stages of an asynchronous operation on stderr: a spinner naming the running stage
//! on a TTY (finished stages stay as lines with their time), plain lines otherwise.

use std::io::IsTerminal as _;
use std::time::Duration;

use banger_api::types::{CreateStatus, StageState};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;

/// Renders stage updates.
pub(crate) struct StageUi {
    bar: Option<ProgressBar>,
    /// Stages already reported as finished.
    finished: usize,
    /// The running stage last shown.
    running: Option<String>,
}

fn hint_for(stage: &str) -> &'static str {
    match stage {
        "image" => " (the first use builds the default kernel and image: a few minutes)",
        "boot" => " (waiting for ssh)",
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
        }
    }

    pub(crate) fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => output::status(text),
        }
    }

    /// Shows what changed since the last update.
    pub(crate) fn update(&mut self, st: &CreateStatus) {
        for stage in st.stages.iter().skip(self.finished) {
            match stage.state {
                StageState::Running => {
                    if self.running.as_deref() != Some(&stage.name) {
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
