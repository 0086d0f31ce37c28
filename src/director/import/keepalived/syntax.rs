//! keepalived.conf as written: words, `{ }` blocks, `#`/`!` comments, quoted strings and
//! `include GLOB` (relative to the including file), read into a tree of items. No meaning:
//! `keepalived::services` decides what a keyword is. Bounded: include depth, files read,
//! bytes read and block nesting all have limits, and an include cycle is refused naming
//! both files.

use super::super::document::Place;
use crate::config_file::ConfigError;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How deep includes may nest (keepalived itself stops at 8 or so in practice).
const MAX_INCLUDE_DEPTH: usize = 8;
/// How many files one import may read, includes counted.
const MAX_FILES: usize = 256;
/// How many bytes one import may read, all files together.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// How deep `{ }` blocks may nest (keepalived's own deepest is four).
const MAX_NESTING: usize = 16;

/// One word of the input, quotes removed, with where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::director::import) struct Word {
    pub(in crate::director::import) at: Place,
    pub(in crate::director::import) text: String,
}

/// A keyword line: the keyword, its arguments and its `{ }` block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::director::import) struct Item {
    pub(in crate::director::import) key: Word,
    pub(in crate::director::import) args: Vec<Word>,
    pub(in crate::director::import) block: Option<Vec<Item>>,
}

impl Item {
    pub(in crate::director::import) fn at(&self) -> &Place {
        &self.key.at
    }

    /// The keyword and its arguments as written, for messages.
    pub(in crate::director::import) fn head(&self) -> String {
        std::iter::once(self.key.text.as_str())
            .chain(self.args.iter().map(|a| a.text.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(Word),
    Open(Place),
    Close(Place),
    EndOfLine,
}

/// What reading the input produced besides the tree: warnings (an include that matched no
/// file).
struct Lexer {
    tokens: Vec<Token>,
    warnings: Vec<String>,
    files: usize,
    bytes: usize,
    /// The files being read, outermost first, to refuse a cycle.
    stack: Vec<PathBuf>,
    /// Whether `include` reads files (not for a text given alone).
    includes: bool,
}

/// Reads `path` and every file it includes into a tree of items.
pub(in crate::director::import) fn parse_file(
    path: &Path,
) -> Result<(Vec<Item>, Vec<String>), ConfigError> {
    let mut lexer = Lexer {
        tokens: Vec::new(),
        warnings: Vec::new(),
        files: 0,
        bytes: 0,
        stack: Vec::new(),
        includes: true,
    };
    lexer.file(path, None)?;
    let items = tree(&lexer.tokens)?;
    Ok((items, lexer.warnings))
}

/// Parses one text without includes (`name` names it in errors).
#[cfg(test)]
pub(in crate::director::import) fn parse_text(
    name: &str,
    text: &str,
) -> Result<Vec<Item>, ConfigError> {
    let mut lexer = Lexer {
        tokens: Vec::new(),
        warnings: Vec::new(),
        files: 0,
        bytes: 0,
        stack: vec![PathBuf::from(name)],
        includes: false,
    };
    lexer.text(name.into(), text)?;
    tree(&lexer.tokens)
}

impl Lexer {
    /// Reads one file (`from`: the include line that named it).
    fn file(&mut self, path: &Path, from: Option<&Place>) -> Result<(), ConfigError> {
        let name: Rc<str> = path.display().to_string().into();
        let cannot = |e: String| match from {
            Some(at) => at.err(format_args!("include {name}: {e}")),
            None => ConfigError(format!("{name}: {e}")),
        };
        let canonical = std::fs::canonicalize(path).map_err(|e| cannot(e.to_string()))?;
        if let Some(first) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[first..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| p.display().to_string())
                .collect();
            return Err(cannot(format!(
                "include cycle: {}; remove one of these includes",
                chain.join(" includes ")
            )));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(cannot(format!(
                "includes nest deeper than {MAX_INCLUDE_DEPTH} files"
            )));
        }
        self.files += 1;
        if self.files > MAX_FILES {
            return Err(cannot(format!("more than {MAX_FILES} files included")));
        }
        let text = read(path, MAX_BYTES - self.bytes).map_err(cannot)?;
        self.bytes += text.len();
        self.stack.push(canonical);
        self.text(name, &text)?;
        self.stack.pop();
        Ok(())
    }

    fn text(&mut self, file: Rc<str>, text: &str) -> Result<(), ConfigError> {
        for (i, line) in text.lines().enumerate() {
            let at = |col| Place {
                file: file.clone(),
                line: i + 1,
                col,
            };
            let words = line_tokens(line, &at)?;
            if let Some(Token::Word(first)) = words.first() {
                if first.at.col == first_col(line) && is_include(&first.text) {
                    self.include(&first.at, &words[1..])?;
                    continue;
                }
                refuse_advanced(line, &first.at)?;
            }
            self.tokens.extend(words);
            self.tokens.push(Token::EndOfLine);
        }
        Ok(())
    }

    /// `include PATTERN`: every file the pattern matches, relative to the including file.
    fn include(&mut self, at: &Place, rest: &[Token]) -> Result<(), ConfigError> {
        let pattern = match rest {
            [Token::Word(w)] => &w.text,
            _ => return Err(at.err("include needs one file name or pattern")),
        };
        if !self.includes {
            return Err(at.err("include is only read from a file"));
        }
        let base = Path::new(&*at.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let pattern = base.join(pattern);
        let matched = glob(&pattern)
            .map_err(|e| at.err(format_args!("include {}: {e}", pattern.display())))?;
        if matched.is_empty() {
            self.warnings.push(format!(
                "{}:{}: include {} matches no file; nothing included",
                at.file,
                at.line,
                pattern.display()
            ));
        }
        for path in matched {
            self.file(&path, Some(at))?;
        }
        Ok(())
    }
}

fn is_include(word: &str) -> bool {
    matches!(
        word,
        "include" | "includer" | "includem" | "includew" | "includeb" | "includea"
    )
}

/// The column (from 1) of a line's first non-blank character.
fn first_col(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).count() + 1
}

/// keepalived's advanced configuration (conditional lines, `$NAME=` definitions, `~SEQ`)
/// changes what the file says before it is read; import does not evaluate it.
fn refuse_advanced(line: &str, at: &Place) -> Result<(), ConfigError> {
    let t = line.trim_start();
    let definition =
        t.starts_with('$') && t.split_whitespace().next().is_some_and(|w| w.contains('='));
    if t.starts_with('@') || definition || t.contains("~SEQ") {
        return Err(at.err(
            "conditional configuration, $parameters and ~SEQ are not supported by import; \
             write the configuration out without them",
        ));
    }
    Ok(())
}

/// The tokens of one line: words (quotes removed), `{`, `}`; a comment ends the line.
fn line_tokens(line: &str, at: &dyn Fn(usize) -> Place) -> Result<Vec<Token>, ConfigError> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().enumerate().peekable();
    while let Some(&(i, c)) = chars.peek() {
        let col = i + 1;
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' | '!' => break,
            '{' | '}' => {
                chars.next();
                tokens.push(if c == '{' {
                    Token::Open(at(col))
                } else {
                    Token::Close(at(col))
                });
            }
            _ => {
                let text = word(&mut chars, &at(col))?;
                tokens.push(Token::Word(Word { at: at(col), text }));
            }
        }
    }
    Ok(tokens)
}

/// One word: up to whitespace, a brace or a comment outside quotes; `"…"` and `'…'` keep
/// their whitespace, with the shell's backslash escapes.
fn word(
    chars: &mut std::iter::Peekable<impl Iterator<Item = (usize, char)>>,
    at: &Place,
) -> Result<String, ConfigError> {
    let mut text = String::new();
    while let Some(&(_, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => break,
            '#' | '!' | '{' | '}' => break,
            '"' | '\'' => {
                chars.next();
                quoted(chars, c, &mut text)
                    .ok_or_else(|| at.err(format_args!("unterminated {c}quoted string{c}")))?;
            }
            c => {
                chars.next();
                text.push(c);
            }
        }
    }
    Ok(text)
}

/// The rest of a quoted string up to `quote` (consumed), escapes resolved; None when the
/// line ends first.
fn quoted(
    chars: &mut impl Iterator<Item = (usize, char)>,
    quote: char,
    text: &mut String,
) -> Option<()> {
    loop {
        let (_, c) = chars.next()?;
        match c {
            c if c == quote => return Some(()),
            '\\' => {
                let (_, e) = chars.next()?;
                text.push(match e {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'E' => '\u{1b}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    other => other,
                });
            }
            c => text.push(c),
        }
    }
}

/// The items of a token stream: `keyword args… [{ items… }]`, a block's `{` on the same
/// line or the next.
fn tree(tokens: &[Token]) -> Result<Vec<Item>, ConfigError> {
    let mut i = 0;
    let items = block(tokens, &mut i, None, 0)?;
    Ok(items)
}

fn block(
    tokens: &[Token],
    i: &mut usize,
    open: Option<&Place>,
    depth: usize,
) -> Result<Vec<Item>, ConfigError> {
    let mut items = Vec::new();
    while let Some(t) = tokens.get(*i) {
        *i += 1;
        match t {
            Token::EndOfLine => {}
            Token::Close(at) => match open {
                Some(_) => return Ok(items),
                None => return Err(at.err("} without a block to close")),
            },
            Token::Open(at) => return Err(at.err("{ without a keyword before it")),
            Token::Word(key) => items.push(item(tokens, i, key.clone(), depth)?),
        }
    }
    match open {
        Some(at) => Err(at.err("{ is never closed; add the matching }")),
        None => Ok(items),
    }
}

/// The rest of the item `key` starts: its arguments, then its block if one opens.
fn item(tokens: &[Token], i: &mut usize, key: Word, depth: usize) -> Result<Item, ConfigError> {
    let mut args = Vec::new();
    while let Some(Token::Word(w)) = tokens.get(*i) {
        args.push(w.clone());
        *i += 1;
    }
    // `{` may open on the next line.
    let mut j = *i;
    while tokens.get(j) == Some(&Token::EndOfLine) {
        j += 1;
    }
    let block = match tokens.get(j) {
        Some(Token::Open(at)) => {
            if depth + 1 > MAX_NESTING {
                return Err(at.err(format_args!("blocks nest deeper than {MAX_NESTING}")));
            }
            *i = j + 1;
            Some(block(tokens, i, Some(at), depth + 1)?)
        }
        _ => None,
    };
    Ok(Item { key, args, block })
}

/// A file's text: a regular file, at most `limit` bytes, UTF-8.
fn read(path: &Path, limit: usize) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > limit as u64 {
        return Err(format!("the input is larger than {} MiB", MAX_BYTES >> 20));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() > limit {
        return Err(format!("the input is larger than {} MiB", MAX_BYTES >> 20));
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".into())
}

/// The files a pattern names, sorted (as glob(3) returns them): `*`, `?` and `[…]` in any
/// path component; a pattern without them names itself if it exists.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = vec![PathBuf::new()];
    for part in pattern.components() {
        let part = part.as_os_str().to_string_lossy();
        let wild = part.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for dir in &found {
            if !wild {
                next.push(dir.join(&*part));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && matches(&part, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
        if found.len() > MAX_FILES {
            return Err(format!("matches more than {MAX_FILES} files"));
        }
    }
    Ok(found.into_iter().filter(|p| p.exists()).collect())
}

/// Whether `name` matches the shell pattern `pattern` (`*`, `?`, `[abc]`, `[a-z]`, `[!a]`).
fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_at(&p, &n)
}

fn match_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|k| match_at(&p[1..], &n[k..])),
        Some('?') => !n.is_empty() && match_at(&p[1..], &n[1..]),
        Some('[') => match (n.first(), class(&p[1..])) {
            (Some(c), Some((set, rest))) => set(*c) && match_at(rest, &n[1..]),
            (_, None) => n.first() == Some(&'[') && match_at(&p[1..], &n[1..]),
            (None, _) => false,
        },
        Some(c) => n.first() == Some(c) && match_at(&p[1..], &n[1..]),
    }
}

/// A `[…]` class (after its `[`): the test for one character and the pattern after `]`.
fn class(p: &[char]) -> Option<(impl Fn(char) -> bool + '_, &[char])> {
    let negated = matches!(p.first(), Some('!' | '^'));
    let body_start = usize::from(negated);
    let end = p.iter().skip(body_start + 1).position(|c| *c == ']')? + body_start + 1;
    let body = &p[body_start..end];
    let test = move |c: char| {
        let mut k = 0;
        let mut hit = false;
        while k < body.len() {
            if k + 2 < body.len() && body[k + 1] == '-' {
                hit |= body[k] <= c && c <= body[k + 2];
                k += 3;
            } else {
                hit |= body[k] == c;
                k += 1;
            }
        }
        hit != negated
    };
    Some((test, &p[end + 1..]))
}
