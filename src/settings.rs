//! Settings: what was typed and what the environment says, turned once into what the
//! commands use (the way a command line's low-level flags become high-level settings).
//!
//! Built in one place, before any command runs: the ledger's path (`--ledger`, or the
//! sandbox's ledger with `--sandbox`, or the default), whether the built-in API is
//! meant, how much to print, and, asked for only by the commands that talk to the API,
//! the endpoint with its credentials. Commands receive these, never clap's structs for
//! the global flags. Nothing here opens a file or makes a request.

use std::path::PathBuf;

use crate::api::Credentials;
use crate::cli::{self, Global};

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
    /// Each problem row as it happens.
    pub verbose: bool,
    /// `--base-url` as typed; checked only by [`Settings::endpoint`].
    base_url: Option<String>,
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
