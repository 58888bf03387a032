//! The gateway's log output: every line passes through the detector before it is written.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, LazyLock, RwLock};

use opentelemetry_sdk::trace::SdkTracerProvider;

use portcullis_engine::config::{LogFormat, LogSettings, TracingSettings};
use portcullis_redact::detect::{Detector, Finding, mask};

/// The detector log lines pass through: every builtin rule until a configuration is loaded,
/// then the configured set.
static DETECTOR: LazyLock<RwLock<Arc<Detector>>> = LazyLock::new(|| RwLock::new(Arc::new(Detector::builtin())));

/// The detector log lines (and exported spans) pass through now.
pub(crate) fn current_detector() -> Option<Arc<Detector>> {
    DETECTOR.read().map(|d| Arc::clone(&d)).ok()
}

/// Makes later log lines use the configured detector (with the operator's rules).
pub(crate) fn use_detector(detector: Arc<Detector>) {
    if let Ok(mut current) = DETECTOR.write() {
        *current = detector;
    }
}

/// Starts logging to standard error at `warn` (`info` with `--verbose`), or as `PORTCULLIS_LOG`
/// says, redacted, in the human format.
pub(crate) fn init(verbose: bool) {
    let _ = init_with(verbose, &LogSettings::default(), None);
}

/// Starts logging as the configuration says (`logging.format`, `logging.level`; the
/// environment's `PORTCULLIS_LOG` still wins), and exporting spans over OTLP when
/// `tracing` is configured. Returns the tracer provider to shut down at exit.
///
/// # Errors
/// When the trace exporter can't be built.
pub(crate) fn init_with(
    verbose: bool,
    settings: &LogSettings,
    tracing: Option<&TracingSettings>,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = settings
        .level
        .clone()
        .unwrap_or_else(|| if verbose { "info" } else { "warn" }.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: escape codes in a log file or pipeline are noise.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| RedactingStderr);
    let fmt = match settings.format {
        LogFormat::Human => fmt.boxed(),
        // Each line carries its spans' fields: the intent's id, agent and action.
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).boxed(),
    };
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>> =
        vec![fmt.with_filter(filter).boxed()];
    let provider = match tracing {
        None => None,
        Some(settings) => {
            use opentelemetry::trace::TracerProvider as _;
            let provider = crate::telemetry::provider(settings)?;
            let tracer = provider.tracer("portcullis");
            // The gateway's own spans, whatever the log level.
            let ours = tracing_subscriber::filter::Targets::new()
                .with_target("portcullis_engine", tracing::Level::INFO)
                .with_target("portcullis_server", tracing::Level::INFO);
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(ours)
                    .boxed(),
            );
            Some(provider)
        }
    };
    tracing_subscriber::registry().with(layers).try_init()?;
    Ok(provider)
}

/// Standard error, with each write redacted. The formatter writes one event per call, so a
/// value is never split across writes.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let detector = current_detector();
        let clean = match &detector {
            Some(detector) => redact_line(detector, &text),
            None => text.into_owned(),
        };
        std::io::stderr().lock().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How many times a line is re-scanned after masking (a placeholder changes the context of
/// its neighbours), as the detector's own `redact` does.
const PASSES: usize = 4;

/// `line` with every finding masked. Log lines often carry JSON, where escapes hide what a
/// rule looks for: `\n` glues its letter to the next word (`\nghp_…` has no word boundary
/// before `ghp_`) and `\"` puts a backslash before the quote a rule expects. The search
/// runs on a copy with the common escapes decoded; each byte of the copy remembers where it
/// came from, so the findings mask the line itself.
pub(crate) fn redact_line(detector: &Detector, line: &str) -> String {
    let mut out = line.to_owned();
    for _ in 0..PASSES {
        let (decoded, origin) = decode_escapes(&out);
        let found = detector.find(&decoded);
        if found.is_empty() {
            break;
        }
        // Back to the line's own offsets (the map only grows, so they stay sorted).
        let on_the_line: Vec<Finding> = found
            .into_iter()
            .map(|mut finding| {
                let at = |offset: usize| origin.get(offset).copied().unwrap_or(out.len());
                finding.range = at(finding.range.start)..at(finding.range.end);
                finding
            })
            .collect();
        out = mask(&out, &on_the_line);
    }
    out
}

/// `text` with `\n`, `\r`, `\t`, `\"`, `\\` and `\/` decoded, and for each byte of the
/// result (plus one past the end) the offset in `text` it came from.
fn decode_escapes(text: &str) -> (Cow<'_, str>, Vec<usize>) {
    if !text.contains('\\') {
        return (Cow::Borrowed(text), (0..=text.len()).collect());
    }
    let mut decoded = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len() + 1);
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let unescaped = match (c, chars.peek()) {
            ('\\', Some(&(_, next))) => match next {
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                '"' | '\\' | '/' => Some(next),
                _ => None,
            },
            _ => None,
        };
        let c = match unescaped {
            Some(u) => {
                chars.next();
                u
            }
            None => c,
        };
        for _ in 0..c.len_utf8() {
            origin.push(at);
        }
        decoded.push(c);
    }
    origin.push(text.len());
    (Cow::Owned(decoded), origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_after_json_escapes_are_masked_and_the_rest_kept() {
        let detector = Detector::builtin();
        let line = r#"input={"text":"a\n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\tmail ops@example.com\\n"}"#;
        assert_eq!(
            redact_line(&detector, line),
            r#"input={"text":"a\n[REDACTED:github-pat]\tmail [REDACTED:email]\\n"}"#
        );
        let quoted = r#"{"text":"{\"AwsSecretAccessKey\": \"3LaruSrjLnonWKTn9UGKzEesg61SHE+qaQQ0NV3v\"}"}"#;
        assert!(!redact_line(&detector, quoted).contains("3LaruSrj"));
        assert_eq!(redact_line(&detector, "nothing to see"), "nothing to see");
    }
}
