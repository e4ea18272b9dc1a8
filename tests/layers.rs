//! The layering rules of ARCHITECTURE.md ("Layers"), checked against the source: every
//! `crate::` path in `src/` names a module its own module may use, the rules have no cycle,
//! clap stays in `cli`, and only `cli` and `demo` print.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The rows of the table under "## Layers": module → the modules it may use.
fn rules() -> BTreeMap<String, BTreeSet<String>> {
    let text = fs::read_to_string(repo("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = text
        .split("\n## Layers\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a section \"## Layers\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split(',')
            .map(|n| n.trim().trim_matches('`').to_string())
            .filter(|n| !n.is_empty() && n != "—")
            .collect()
    };
    let mut rules = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let ["", module, uses, ""] = cells.as_slice() {
            if module.starts_with('`') {
                let module = module.trim_matches('`').to_string();
                assert!(
                    rules.insert(module.clone(), names(uses)).is_none(),
                    "{module} has two rows"
                );
            }
        }
    }
    assert!(rules.len() > 10, "the table was not found: {rules:?}");
    rules
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to: `src/daemon/core.rs` → `daemon`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(repo("src")).expect("under src");
    let first = relative.components().next().expect("a component");
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The files of `src/` with their module and text, `lib.rs` and `main.rs` left out.
fn files() -> Vec<(PathBuf, String, String)> {
    let mut paths = Vec::new();
    sources(&repo("src"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).expect("read");
            (p.clone(), module_of(&p), text)
        })
        .filter(|(_, m, _)| m != "lib" && m != "main")
        .collect()
}

/// The modules a text names as `crate::NAME`, also in a group: `crate::{a, b::c}`.
fn used(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(ident(rest));
            continue;
        };
        // The names at the group's top level: at its start and after each comma at depth 0.
        let mut depth = 0;
        names.insert(ident(group));
        for (at, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.insert(ident(&group[at + 1..]));
                }
                _ => {}
            }
        }
    }
    names.remove("");
    names
}

#[test]
fn a_use_names_its_modules_alone_or_in_a_group() {
    let names = |text: &str| used(text).into_iter().collect::<Vec<_>>();
    assert_eq!(names("use crate::config::Config;"), ["config"]);
    assert_eq!(
        names("use crate::{firewall::{self, Kernel}, otp,\n    state::Record,\n};"),
        ["firewall", "otp", "state"]
    );
    assert_eq!(names("crate::{}"), Vec::<String>::new());
}

#[test]
fn every_module_uses_only_what_its_row_allows() {
    let rules = rules();
    let mut broken = Vec::new();
    for (path, module, text) in files() {
        let Some(allowed) = rules.get(&module) else {
            broken.push(format!("{module} ({}) has no row", path.display()));
            continue;
        };
        for name in used(&text) {
            if name != module && !allowed.contains(&name) {
                broken.push(format!("{} uses crate::{name}", path.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "outside ARCHITECTURE.md's layers:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_layers_have_no_cycle_and_name_only_modules_that_exist() {
    let rules = rules();
    let modules: BTreeSet<String> = files().into_iter().map(|(_, m, _)| m).collect();
    let named: BTreeSet<String> = rules.keys().cloned().collect();
    assert_eq!(named, modules, "one row per module of src/");
    // Peel off modules whose every use is already peeled: what is left is in a cycle.
    let mut done = BTreeSet::new();
    while done.len() < rules.len() {
        let next: Vec<&String> = (rules.iter())
            .filter(|(m, uses)| !done.contains(*m) && uses.iter().all(|u| done.contains(u)))
            .map(|(m, _)| m)
            .collect();
        assert!(
            !next.is_empty(),
            "a cycle among {:?}",
            named.difference(&done).collect::<Vec<_>>()
        );
        done.extend(next.into_iter().cloned());
    }
}

#[test]
fn clap_stays_in_the_command_line_and_only_cli_and_demo_print() {
    for (path, module, text) in files() {
        if module == "cli" {
            continue;
        }
        let code: String = (text.lines())
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !code.contains("clap"),
            "{} uses clap below the command line",
            path.display()
        );
        if module != "demo" {
            for printer in ["println!", "eprintln!", "print!(", "eprint!("] {
                assert!(
                    !code.contains(printer),
                    "{} prints ({printer}): return it in a Report instead",
                    path.display()
                );
            }
        }
    }
}
