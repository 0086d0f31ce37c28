//! The tree's promise (docs/architecture.md): no module imports one that imports it back.
//! Reads src/ as text: every `crate::a::b` and `super::x` path outside `#[cfg(test)]` code is
//! an edge from the file's module to the longest module it names (edges between a module and
//! its own ancestors are left out: a façade declares and re-exports its children). A module's
//! code includes its submodules'. Two modules that reach each other are a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    let top = parts.first()?;
    (top != "lib" && top != "main" && top != "testing").then_some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test modules (`#[cfg(test)]` to the end of the item is
/// approximated by "to the end of the file": test modules sit last, as in this crate).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            let before = text[..*i].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
                })
                .unwrap_or(rest.len());
            rest[..end].split("::").filter(|s| !s.is_empty()).collect()
        })
        .collect()
}

fn related(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let longest = |path: Vec<String>| -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains(m))
    };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let Some(me) = module_of(&src, file) else {
            continue;
        };
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source is readable");
        let code = without_tests(&text);
        let parent: Module = if file.ends_with("mod.rs") {
            me[..me.len().saturating_sub(1)].to_vec()
        } else {
            me[..me.len() - 1].to_vec()
        };
        let mut targets: Vec<Module> = Vec::new();
        for p in paths_after(code, "crate::") {
            targets.extend(longest(p.iter().map(|s| s.to_string()).collect()));
        }
        for p in paths_after(code, "super::") {
            let mut full = parent.clone();
            full.extend(p.iter().map(|s| s.to_string()));
            targets.extend(longest(full));
        }
        for t in targets.into_iter().filter(|t| !related(&me, t)) {
            edges.entry(me.clone()).or_default().insert(t);
        }
    }
    let reaches = |from: &Module, to: &Module| -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            // A module's code includes its submodules', not its parent's.
            for (n, _) in edges.iter().filter(|(n, _)| n.starts_with(&m)) {
                for next in &edges[n] {
                    if next.starts_with(to) {
                        return true;
                    }
                    if seen.insert(next.clone()) {
                        todo.push(next.clone());
                    }
                }
            }
        }
        false
    };
    let mut cycles = Vec::new();
    for (a, targets) in &edges {
        for b in targets {
            if a < b && reaches(b, a) {
                cycles.push(format!("{} <-> {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}
