//! Installing the policy through `nft`'s JSON interface: `nft -j -f -` is run directly, never
//! through a shell. (Grants are read back over netlink, see `netlink`.)

use std::io::{self, BufWriter, Write};
use std::process::{Command, Stdio};

use super::ruleset::Batch;

/// What went wrong installing portknock's table.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0} — install the nftables package (apt-get install nftables)")]
    Missing(String),
    #[error("nft refused {what}: {detail} — nothing was changed (the batch is atomic)")]
    Refused { what: &'static str, detail: String },
}

fn first_nonempty(a: &str, b: &str) -> String {
    let text = if a.trim().is_empty() { b } else { a };
    let text = text.trim();
    if text.is_empty() {
        "no message (are you root, or does the process have CAP_NET_ADMIN?)".to_string()
    } else {
        text.to_string()
    }
}

/// Applies one batch atomically: either all of it takes effect or none. Returns the pid of
/// the `nft` that made the change, which the kernel names as the change's maker.
///
/// Runs `nft -j -f -` and streams the batch to its standard input as it is serialized, rather
/// than building the JSON text first (10,000 doors with their grants make megabytes). nft's
/// own messages are captured for the error, and an nft that stops reading early (it failed, or
/// it was killed) is reported by what it said and how it ended, not as a broken pipe.
pub fn apply(batch: &Batch, what: &'static str) -> Result<u32, NftError> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError::Missing(e.to_string()))?;
    let pid = child.id();
    let stdin = child.stdin.take().expect("stdin is piped");
    // Written from a second thread while this one collects nft's output, so neither side can
    // block the other whatever the sizes.
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut stdin = BufWriter::new(stdin);
            serde_json::to_writer(&mut stdin, batch)?;
            stdin.flush()
        });
        let output = child.wait_with_output();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        (written, output)
    });
    let output = output.map_err(|e| NftError::Missing(e.to_string()))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    if !output.status.success() {
        let detail = first_nonempty(&text(&output.stderr), &text(&output.stdout));
        return Err(NftError::Refused {
            what,
            detail: format!("{detail} (nft {})", output.status),
        });
    }
    written.map_err(|e| NftError::Refused {
        what,
        detail: format!("nft did not take the whole batch: {e}"),
    })?;
    Ok(pid)
}
