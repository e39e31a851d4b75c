//! `help`, `completions` and `man`: the command line describing itself.
//!
//! Everything here is rendered from [`cli::command`], so help, completion scripts and
//! man pages cannot drift from what the parser accepts. It reads no input, opens no
//! ledger and makes no request, and must not.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

use crate::app::Exit;
use crate::cli::{self, CompletionsArgs, ManArgs};

/// `help [COMMAND]...`: the long help of a command, or of bbinvite itself.
pub(crate) fn help(topic: &[String]) -> anyhow::Result<Exit> {
    let mut cmd = cli::command();
    // Built, so each command's usage line names it as typed (`bbinvite run`).
    cmd.build();
    for name in topic {
        let Some(sub) = cmd.find_subcommand(name).cloned() else {
            let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
            if names.is_empty() {
                bail!(
                    "\"{}\" has no commands of its own; see `bbinvite help {}`",
                    cmd.get_name(),
                    cmd.get_name()
                );
            }
            bail!(
                "no command \"{name}\"; one of {} (see `bbinvite --help`)",
                names.join(", ")
            );
        };
        cmd = sub;
    }
    write_stdout(cmd.render_long_help().to_string().as_bytes())?;
    Ok(Exit::Ok)
}

/// `completions SHELL`: the shell's completion script on standard output.
pub(crate) fn completions(a: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "bbinvite", &mut script);
    write_stdout(&script)?;
    Ok(Exit::Ok)
}

/// `man [--dir DIR]`: bbinvite(1) on standard output, or every page into DIR.
pub(crate) fn man(a: &ManArgs) -> anyhow::Result<Exit> {
    let cmd = cli::command();
    match &a.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            write_stdout(&page)?;
        }
        Some(dir) => write_pages(cmd, dir)?,
    }
    Ok(Exit::Ok)
}

/// One page for bbinvite and one per command (`bbinvite-run.1`, …) into `dir`.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create {} for the man pages; name a folder you can write with --dir",
            dir.display()
        )
    })?;
    clap_mangen::generate_to(cmd, dir).with_context(|| {
        format!(
            "cannot write the man pages into {}; name a folder you can write with --dir",
            dir.display()
        )
    })
}

/// Writes all of `bytes` to standard output; a reader that went away is the caller's
/// business (`main` exits quietly on a broken pipe).
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}
