//! Progress bars for long operator commands (`audit verify`, `audit export`,
//! `catalog import-openapi`), drawn on standard error only when it is a terminal.
//!
//! In a pipe, a file or under a supervisor nothing at all is written: the bar is hidden
//! before indicatif is asked to draw, rather than trusting it to notice. A bar is cleared
//! when dropped, on success and on error alike, so a command's output is the same with and
//! without one.

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a bar over a known number of items looks.
const BAR: &str = "{msg} [{wide_bar}] {human_pos}/{human_len} ({eta})";
/// How a spinner for work of unknown length looks.
const SPINNER: &str = "{spinner} {msg} ({elapsed})";
/// How often a spinner turns while the work it waits on blocks the thread.
const SPIN_EVERY: Duration = Duration::from_millis(100);

/// A progress bar or spinner on standard error, cleared when dropped.
#[derive(Debug)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar over `total` items, labelled `message`.
    pub fn bar(total: u64, message: impl Into<Cow<'static, str>>) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), target()).with_style(style(BAR));
        bar.set_message(message);
        // Drawn now, not after the first item: the first page of a long log can take a while.
        bar.tick();
        Self(bar)
    }

    /// A spinner labelled `message` that turns on its own, for work that reports no steps.
    pub fn spinner(message: impl Into<Cow<'static, str>>) -> Self {
        let spinner = ProgressBar::with_draw_target(None, target()).with_style(style(SPINNER));
        spinner.set_message(message);
        spinner.enable_steady_tick(SPIN_EVERY);
        Self(spinner)
    }

    /// Nothing drawn: for a command whose own output already shows it is moving.
    pub fn hidden() -> Self {
        Self(ProgressBar::hidden())
    }

    /// Turns a spinner into a bar over `total` items, labelled `message`.
    pub fn switch_to_bar(&self, total: u64, message: impl Into<Cow<'static, str>>) {
        self.0.disable_steady_tick();
        self.0.set_style(style(BAR));
        self.0.set_message(message);
        self.0.set_length(total);
        self.0.set_position(0);
    }

    /// Sets how many items are done.
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Relabels the bar.
    pub fn message(&self, message: impl Into<Cow<'static, str>>) {
        self.0.set_message(message);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Standard error when it is a terminal (indicatif further hides it when `TERM` is unset or
/// `dumb`), otherwise nowhere.
fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants, checked by a test: the fallback is never used.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse() {
        for template in [BAR, SPINNER] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
