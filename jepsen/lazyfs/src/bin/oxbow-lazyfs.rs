//! `oxbow-lazyfs`: mounts a lazy filesystem by hand (see the library's docs for the model).
//!
//! `oxbow-lazyfs mount --backing DIR --mountpoint DIR` serves until SIGINT or SIGTERM, and on
//! SIGUSR1 loses every write not yet fsynced, as a power failure would
//! (`kill -USR1 $(pidof oxbow-lazyfs)`). `oxbow-lazyfs clean --mountpoint DIR` detaches a stale
//! mount left by a killed `oxbow-lazyfs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxbow_lazyfs::{LazyFs, Options};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

#[derive(Parser)]
#[command(
    name = "oxbow-lazyfs",
    about = "A FUSE passthrough that holds unsynced writes in memory and loses them on SIGUSR1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mounts a lazy view of BACKING on MOUNTPOINT until SIGINT or SIGTERM; SIGUSR1 loses
    /// every unsynced write.
    Mount {
        /// The directory holding the durable files.
        #[arg(long)]
        backing: PathBuf,
        /// Where to mount (an existing directory).
        #[arg(long)]
        mountpoint: PathBuf,
        /// The most bytes of unsynced writes held in memory before they are written back.
        #[arg(long, default_value_t = Options::default().pending_bytes_max)]
        pending_bytes_max: u64,
    },
    /// Detaches a stale oxbow-lazyfs mount (its process was killed) from MOUNTPOINT.
    Clean {
        #[arg(long)]
        mountpoint: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbow-lazyfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> std::io::Result<()> {
    match cli.command {
        Command::Mount {
            backing,
            mountpoint,
            pending_bytes_max,
        } => {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
            let lazy = LazyFs::mount_with(&backing, &mountpoint, Options { pending_bytes_max })?;
            eprintln!(
                "oxbow-lazyfs: {} mounted on {} (pid {}; SIGUSR1 loses unsynced writes, SIGINT or SIGTERM unmounts)",
                backing.display(),
                lazy.mountpoint().display(),
                std::process::id()
            );
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    let loss = lazy.lose_unsynced();
                    eprintln!(
                        "oxbow-lazyfs: lost {} unsynced bytes in {} files",
                        loss.bytes, loss.files
                    );
                } else {
                    break;
                }
            }
            lazy.unmount()?;
            eprintln!("oxbow-lazyfs: unmounted");
            Ok(())
        }
        Command::Clean { mountpoint } => {
            if oxbow_lazyfs::unmount_stale(&mountpoint)? {
                eprintln!(
                    "oxbow-lazyfs: detached a stale mount from {}",
                    mountpoint.display()
                );
            } else {
                eprintln!("oxbow-lazyfs: no mount of ours on {}", mountpoint.display());
            }
            Ok(())
        }
    }
}
