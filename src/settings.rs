//! Settings: what was typed and what the environment says, turned once into what the
//! commands use (the way a command line's low-level flags become high-level settings).
//!
//! Built in one place, before any command runs: the ledger's path (`--ledger`, or the
//! sandbox's ledger with `--sandbox`, or the default), whether the built-in API is
//! meant, how much to print, and, asked for only by the commands that talk to the API,
//! the endpoint with its credentials. Commands receive these, never clap's structs for
//! the global flags. Nothing here opens a file or makes a request.

use std::path::PathBuf;

use crate::api::{Credentials, Secret};
use crate::cli::{self, AnnounceArgs, Global};
use crate::report::{Announce, NOTIFY_URL_ENV};

/// The settings every command shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The ledger file.
    pub ledger: PathBuf,
    /// The built-in simulator, and its own ledger, instead of the real API.
    pub sandbox: bool,
    /// JSON on stdout.
    pub json: bool,
    /// Only errors.
    pub quiet: bool,
    /// How much more to print: 1 (`-v`) each problem row as it happens; 2 (`-vv`) also
    /// a line per API request.
    pub verbose: u8,
    /// `--base-url` as typed; checked only by [`Settings::endpoint`].
    base_url: Option<String>,
    /// The webhook that hears of each sending command's end (`BBINVITE_NOTIFY_URL`):
    /// a secret, so its `Debug` shows stars.
    notify_url: Option<Secret>,
}

/// The API a command will talk to, with what it proves itself with; checked, not yet used.
pub enum Endpoint {
    /// The in-process simulator of `--sandbox`: it accepts any token.
    BuiltinSandbox,
    /// A real (or stand-alone sandbox) API.
    Remote {
        base_url: String,
        credentials: Credentials,
    },
}

impl Settings {
    /// The settings the global flags ask for.
    pub fn new(global: &Global) -> Settings {
        let ledger = global.ledger.clone().unwrap_or_else(|| {
            PathBuf::from(if global.sandbox {
                cli::SANDBOX_LEDGER
            } else {
                cli::DEFAULT_LEDGER
            })
        });
        Settings {
            ledger,
            sandbox: global.sandbox,
            json: global.json,
            quiet: global.quiet,
            verbose: global.verbose,
            base_url: global.base_url.clone(),
            notify_url: notify_url(std::env::var(NOTIFY_URL_ENV).ok()),
        }
    }

    /// What a sending command tells at its end: `--notify-on` and `--metrics-file` as
    /// typed, and the webhook from the environment.
    pub fn announce(&self, flags: &AnnounceArgs) -> Announce {
        Announce {
            notify_on: flags.notify_on,
            metrics_file: flags.metrics_file.clone(),
            notify_url: self.notify_url.clone(),
        }
    }

    /// The endpoint from the flags and the environment: [`Settings::base_url`], and
    /// well-formed credentials from the environment.
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        if self.sandbox {
            return Ok(Endpoint::BuiltinSandbox);
        }
        Ok(Endpoint::Remote {
            base_url: self.base_url()?,
            credentials: cli::credentials_from_env()?,
        })
    }

    /// The API's base URL: `--base-url`, else `BILLINGBOOTH_BASE_URL`, else the public
    /// API; checked to be safe to send credentials to.
    pub fn base_url(&self) -> anyhow::Result<String> {
        let raw = match &self.base_url {
            Some(u) => u.clone(),
            None => std::env::var("BILLINGBOOTH_BASE_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| cli::DEFAULT_BASE_URL.to_string()),
        };
        cli::check_base_url(&raw)
    }
}

/// The webhook URL from the environment's value: `None` when unset or blank.
fn notify_url(value: Option<String>) -> Option<Secret> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_url_is_read_once_and_never_shown() {
        assert!(notify_url(None).is_none());
        assert!(notify_url(Some("  ".into())).is_none());
        let url = "https://hooks.example.com/services/T0/B0/s3cr3t";
        let global = Global {
            ledger: None,
            base_url: None,
            json: false,
            quiet: false,
            verbose: 0,
            sandbox: false,
        };
        let mut settings = Settings::new(&global);
        settings.notify_url = notify_url(Some(format!(" {url}\n")));
        let flags = AnnounceArgs {
            notify_on: crate::report::NotifyOn::Always,
            metrics_file: None,
        };
        let announce = settings.announce(&flags);
        assert_eq!(
            announce.notify_url.as_ref().map(Secret::expose),
            Some(url),
            "trimmed, and handed down"
        );
        for shown in [format!("{settings:?}"), format!("{announce:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }
}
