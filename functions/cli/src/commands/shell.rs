//! `m365-provisioner completions SHELL` and `m365-provisioner man`: what a shell and `man` need,
//! generated from the same definitions as `--help`.

use std::io::Write;
use std::path::PathBuf;

use crate::exit::Code;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Prints the completion script for SHELL on stdout. Install it where your shell looks:

  m365-provisioner completions bash > ~/.local/share/bash-completion/completions/m365-provisioner
  m365-provisioner completions zsh > \"${fpath[1]}/_m365-provisioner\"
  m365-provisioner completions fish > ~/.config/fish/completions/m365-provisioner.fish")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Without --dir, prints the main page (roff) on stdout:

  m365-provisioner man > m365-provisioner.1 && man ./m365-provisioner.1

With --dir, writes that page and one per command (m365-provisioner-sync.1, …) into DIR, for a
man directory such as ~/.local/share/man/man1.")]
pub struct ManArgs {
    /// Write every page into this directory instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> Code {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    printed(std::io::stdout().lock().write_all(&script))
}

/// What a write to stdout ended with: a reader that stopped early (`| head`) is not an error.
fn printed(result: std::io::Result<()>) -> Code {
    match result {
        Ok(()) => Code::Success,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Code::Success,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot print: {e}");
            Code::Failure
        }
    }
}

pub fn man(args: &ManArgs, command: clap::Command) -> Code {
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        return match clap_mangen::Man::new(command).render(&mut page) {
            Ok(()) => printed(std::io::stdout().lock().write_all(&page)),
            Err(e) => printed(Err(e)),
        };
    };
    match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir)) {
        Ok(()) => Code::Success,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot write the man pages into {}: {e}",
                dir.display()
            );
            Code::Failure
        }
    }
}
