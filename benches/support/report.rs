//! Output: `name=value` lines as figures come in, and readable tables at the end.

use std::fmt::Display;

/// Prints one `name=value` line at once (so a partial run still reports what it measured).
pub fn kv(name: &str, value: impl Display) {
    println!("{name}={value}");
}

/// A figure in µs, or `-` when there is none.
pub fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

/// A number with one decimal, or `-`.
pub fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The 1-minute load and how many fuzzer processes run, for every figure.
pub fn load_note() -> String {
    let (one, five, _) = super::procfs::load();
    format!("{one:.2}/{five:.2}")
}

/// A table printed at the end of the run.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown (readable in a terminal, and pasted as is into BENCHMARKS.md).
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w - c.chars().count();
                if i == 0 {
                    s += &format!(" {c}{} |", " ".repeat(pad));
                } else {
                    s += &format!(" {}{c} |", " ".repeat(pad));
                }
            }
            s
        };
        let mut out = format!("\n### {}\n\n", self.title);
        out += &line(&self.header);
        out += "\n|";
        for (i, w) in width.iter().enumerate() {
            out += &if i == 0 {
                format!("{}|", "-".repeat(w + 2))
            } else {
                format!("{}:|", "-".repeat(w + 1))
            };
        }
        out += "\n";
        for r in &self.rows {
            out += &line(r);
            out += "\n";
        }
        out
    }
}
