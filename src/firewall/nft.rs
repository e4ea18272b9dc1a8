//! Installing the policy and reading grants back through `nft`'s JSON interface: `nft -j` is
//! run directly, never through a shell (by the `nftables` crate for listings, here for batches).

use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use nftables::helper::{self, NftablesError};
use serde_json::Value;

use super::ruleset::{Batch, Family, Grant, TABLE};

/// What went wrong installing or reading portknock's table.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0} — install the nftables package (apt-get install nftables)")]
    Missing(String),
    #[error("nft refused {what}: {detail} — nothing was changed (the batch is atomic)")]
    Refused { what: &'static str, detail: String },
    #[error("nft printed JSON portknock cannot read while {what}: {detail}")]
    Unreadable { what: &'static str, detail: String },
}

fn nft_error(what: &'static str, err: NftablesError) -> NftError {
    match err {
        NftablesError::NftExecution { inner, .. } => NftError::Missing(inner.to_string()),
        NftablesError::NftFailed { stderr, stdout, .. } => NftError::Refused {
            what,
            detail: first_nonempty(&stderr, &stdout),
        },
        other => NftError::Unreadable {
            what,
            detail: other.to_string(),
        },
    }
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

/// Applies one batch atomically: either all of it takes effect or none.
pub fn apply(batch: &Batch, what: &'static str) -> Result<(), NftError> {
    let json = serde_json::to_string(batch).map_err(|e| NftError::Unreadable {
        what,
        detail: e.to_string(),
    })?;
    run_batch(&json, what)
}

/// Runs `nft -j -f -` with `json` on its standard input and waits for it. nft's own messages
/// are captured for the error, and an nft that stops reading early (it failed, or it was
/// killed) is reported by what it said and how it ended, not as a broken pipe.
fn run_batch(json: &str, what: &'static str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError::Missing(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written from a second thread while this one collects nft's output, so neither side can
    // block the other whatever the sizes.
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || stdin.write_all(json.as_bytes()));
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
    })
}

/// Whether portknock's table is installed.
pub fn table_exists() -> Result<bool, NftError> {
    let out = helper::get_current_ruleset_raw(helper::DEFAULT_NFT, ["list", "tables", "inet"])
        .map_err(|e| nft_error("listing tables", e))?;
    let json: Value = parse(&out, "listing tables")?;
    let exists = objects(&json)
        .filter_map(|o| o.get("table"))
        .any(|t| t["name"] == TABLE);
    Ok(exists)
}

/// Every active grant in the kernel, or `None` when the table is not installed.
pub fn grants() -> Result<Option<Vec<Grant>>, NftError> {
    if !table_exists()? {
        return Ok(None);
    }
    let mut grants = Vec::new();
    for family in [Family::V4, Family::V6] {
        let out = helper::get_current_ruleset_raw(
            helper::DEFAULT_NFT,
            ["list", "set", "inet", TABLE, family.granted()],
        )
        .map_err(|e| nft_error("listing grants", e))?;
        grants.extend(parse_grants(&parse(&out, "listing grants")?));
    }
    grants.sort();
    Ok(Some(grants))
}

fn parse(out: &str, what: &'static str) -> Result<Value, NftError> {
    serde_json::from_str(out).map_err(|e| NftError::Unreadable {
        what,
        detail: e.to_string(),
    })
}

fn objects(json: &Value) -> impl Iterator<Item = &Value> {
    json["nftables"].as_array().into_iter().flatten()
}

/// Reads the elements of a listed grant set: `{"elem": {"val": {"concat": [ADDR, PORT]},
/// "timeout": T, "expires": E}}`. Elements in any other shape are not portknock's and skipped.
fn parse_grants(json: &Value) -> Vec<Grant> {
    objects(json)
        .filter_map(|o| o.get("set"))
        .flat_map(|set| set["elem"].as_array().into_iter().flatten())
        .filter_map(|e| {
            let elem = &e["elem"];
            let concat = elem["val"]["concat"].as_array()?;
            let source: IpAddr = concat.first()?.as_str()?.parse().ok()?;
            let port = u16::try_from(concat.get(1)?.as_u64()?).ok()?;
            let remaining = Duration::from_secs(elem["expires"].as_u64().unwrap_or(0));
            Some(Grant {
                source,
                port,
                remaining,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grants_from_nft_json() {
        let listing = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"set": {"family": "inet", "name": "granted4", "table": "portknock",
                "elem": [
                    {"elem": {"val": {"concat": ["198.18.0.2", 22]}, "timeout": 30, "expires": 12}},
                    {"elem": {"val": {"concat": ["198.18.0.3", 2222]}, "timeout": 3600, "expires": 3599}},
                    {"elem": {"val": "garbage"}}
                ]}}
        ]});
        let grants = parse_grants(&listing);
        assert_eq!(grants.len(), 2);
        assert_eq!(grants[0].port, 22);
        assert_eq!(grants[0].remaining, Duration::from_secs(12));
        assert_eq!(grants[1].source.to_string(), "198.18.0.3");
    }
}
