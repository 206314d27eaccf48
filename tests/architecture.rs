//! The module boundaries of docs/design.md, checked against the code's own imports.
//!
//! Reads every `src/**/*.rs`, collects which top-level modules each top-level module
//! names (`crate::x`, `crate::{x, …}`, and `super::…` paths that climb to the crate
//! root), and asserts that
//! - the top-level modules form no cycle, and
//! - every rule of the "Import rules" table in docs/design.md holds (the table is parsed
//!   here, so the document and the check cannot drift apart), and
//! - only the modules that the same document names import `pingora` (its "Who imports
//!   Pingora" table).
//!
//! Test code may import freely: `tests.rs` files and a trailing `#[cfg(test)] mod …`
//! are not read. Comments are not read either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges still present because another part of the redesign has not landed yet, each
/// with its reason. Remove a line as soon as its edge is gone: the test fails on an
/// exception that no longer matches anything, so the list cannot go stale.
const KNOWN_EXCEPTIONS: &[(&str, &str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under src/: `a.rs` and `a/mod.rs` are `[a]`, `a/b.rs` is
/// `[a, b]`; `lib.rs` and `main.rs` are the root (`[]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().unwrap_or_default();
    match file.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        f => parts.push(f.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The code of a file without comments and without its trailing test module.
fn production_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("mod ")) {
            break;
        }
        if trimmed.starts_with("#[cfg(test)]") && trimmed.contains(" mod ") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named by `code`, a file of module `path`.
fn named_modules(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$');
        if word_start && rest.starts_with("crate::") {
            let after = &rest["crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    found.insert(ident_at(item.trim()).to_string());
                }
            } else {
                found.insert(ident_at(after).to_string());
            }
            i += "crate::".len();
            continue;
        }
        if word_start && rest.starts_with("super::") {
            let mut depth = path.len();
            let mut after = rest;
            while let Some(r) = after.strip_prefix("super::") {
                depth = depth.saturating_sub(1);
                after = r;
            }
            if depth == 0 {
                found.insert(ident_at(after).to_string());
            }
            i += rest.len() - after.len();
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    found
}

/// The import graph between top-level modules (self-edges left out).
fn import_graph() -> (Graph, BTreeMap<String, BTreeSet<String>>) {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut tops = BTreeSet::new();
    for f in &files {
        let path = module_path(f.strip_prefix(&src).expect("under src/"));
        if let Some(top) = path.first() {
            tops.insert(top.clone());
        }
    }
    let mut graph: Graph = tops.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    let mut pingora: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src/");
        if rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let path = module_path(rel);
        let Some(top) = path.first() else { continue };
        let code = production_code(&std::fs::read_to_string(f).expect("a source file is readable"));
        for m in named_modules(&code, &path) {
            if tops.contains(&m) && m != *top {
                graph.get_mut(top).expect("every top is a node").insert(m);
            }
        }
        if names_pingora(&code) {
            pingora.entry(top.clone()).or_default().insert(rel.display().to_string());
        }
    }
    (graph, pingora)
}

/// Whether code names the `pingora` crate or one of its `pingora_*` crates as a path
/// (`pingora::…`, `pingora_core::…`, `use pingora…`); a string such as a log filter does not.
fn names_pingora(code: &str) -> bool {
    code.match_indices("pingora").any(|(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"' || c == '/' || c == '=' || c == ',') {
            return false;
        }
        let rest = &code[at + "pingora".len()..];
        let rest = rest.strip_prefix('_').map(|r| r.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest);
        rest.starts_with("::") || code[..at].trim_end().ends_with("use")
    })
}

fn without_exceptions(mut graph: Graph) -> Graph {
    for (from, to, _) in KNOWN_EXCEPTIONS {
        if let Some(targets) = graph.get_mut(*from) {
            targets.remove(*to);
        }
    }
    graph
}

/// A cycle through the graph, if any (depth-first search, three colours).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == m).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Backticked names in a table cell: "`a`, `b` (why)" → [a, b].
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(|s| s.trim_end_matches('/').to_string()).collect()
}

/// The rows of the table under `heading` in docs/design.md: first cell's names → second
/// cell's names.
fn design_table(heading: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md is readable");
    let start = doc.find(heading).unwrap_or_else(|| panic!("docs/design.md has no `{heading}`"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            (cells.len() >= 3).then(|| (backticked(cells[1]), backticked(cells[2])))
        })
        .collect()
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (graph, _) = import_graph();
    if let Some(cycle) = find_cycle(&without_exceptions(graph)) {
        panic!("the top-level modules import each other in a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_import_rules_of_the_design_hold() {
    let (graph, _) = import_graph();
    let rules = design_table("### Import rules");
    assert!(rules.len() >= 10, "the import rules table was not found or is nearly empty: {rules:?}");
    let graph_with_exceptions = graph.clone();
    let graph = without_exceptions(graph);
    let mut broken = Vec::new();
    for (modules, forbidden) in &rules {
        for m in modules {
            let imports = graph.get(m).unwrap_or_else(|| panic!("docs/design.md names `{m}`, which is no module of src/"));
            for f in forbidden {
                assert!(graph.contains_key(f), "docs/design.md forbids `{f}`, which is no module of src/");
                if imports.contains(f) {
                    broken.push(format!("{m} imports {f}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "module boundaries of docs/design.md broken: {broken:?}");
    // Every exception still matches a real edge; a fixed one must leave the list.
    for (from, to, why) in KNOWN_EXCEPTIONS {
        assert!(
            graph_with_exceptions.get(*from).is_some_and(|t| t.contains(*to)),
            "known exception {from} -> {to} ({why}) no longer exists: remove it from KNOWN_EXCEPTIONS"
        );
    }
}

#[test]
fn only_the_named_modules_touch_pingora() {
    let (_, pingora) = import_graph();
    let allowed: BTreeSet<String> = design_table("### Who imports Pingora")
        .into_iter()
        .find(|(m, _)| m.iter().any(|x| x == "pingora"))
        .map(|(_, a)| a)
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(!allowed.is_empty(), "docs/design.md's import rules name no `pingora` row");
    let strays: Vec<_> = pingora.iter().filter(|(m, _)| !allowed.contains(*m)).collect();
    assert!(strays.is_empty(), "modules that import pingora without docs/design.md saying so: {strays:?}");
}

#[test]
fn the_extraction_sees_every_spelling_of_an_import() {
    let path = vec!["login".to_string(), "mod_a".to_string()];
    let code = production_code(
        "use crate::web::{self, Reply};\nuse crate::{session, runtime::Runtime};\nfn f() { super::super::broker::x(); super::failure::y(); }\n// crate::gateway\n#[cfg(test)]\nmod tests { use crate::cli; }\n",
    );
    assert!(names_pingora("use pingora::proxy::Session;") && names_pingora("x: pingora_core::Error"));
    assert!(!names_pingora("\"info,pingora_core=warn,pingora=warn\"") && !names_pingora("\"/tmp/pingora_upgrade.sock\""));
    let found = named_modules(&code, &path);
    let want: BTreeSet<String> = ["web", "session", "runtime", "broker"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, want);
}
