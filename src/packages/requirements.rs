//! requirements.txt, parsed by the manager before any builder starts.
//!
//! pip reads far more than package names from a requirements file: other
//! indexes (`--index-url`, `-f`), URLs and paths (`pkg @ https://…`, `./dir`),
//! other files (`-r /proc/self/environ`), editable checkouts (`-e git+…`) and
//! `${VAR}` environment references. Each of those lets a deploy fetch code from
//! anywhere or read the builder's files. Only lines that name packages pass:
//! a name, extras, version specifiers, an environment marker and `--hash`
//! options. The accepted lines are rendered anew from their parsed parts, so
//! pip never sees a byte the parser did not understand.

use std::fmt;

/// How long a quoted line may be in an error message.
const QUOTE_LIMIT: usize = 120;

/// Marker variables of PEP 508.
const MARKER_VARIABLES: &[&str] = &[
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
];

/// One accepted requirement line.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    /// The name as written (pip normalizes it itself).
    pub name: String,
    pub extras: Vec<String>,
    /// Version specifiers, e.g. `>=2.31`, `<3`.
    pub specifiers: Vec<String>,
    pub marker: Option<String>,
    /// `sha256:…` values of `--hash` options.
    pub hashes: Vec<String>,
}

impl Requirement {
    /// The canonical name (PEP 503): lower case, runs of `-_.` as one `-`.
    pub fn key(&self) -> String {
        normalize(&self.name)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.extras.is_empty() {
            write!(f, "[{}]", self.extras.join(","))?;
        }
        f.write_str(&self.specifiers.join(","))?;
        if let Some(marker) = &self.marker {
            write!(f, " ; {marker}")?;
        }
        for hash in &self.hashes {
            write!(f, " --hash={hash}")?;
        }
        Ok(())
    }
}

/// A refused line: which one, what it said, and what is allowed instead.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "requirements.txt line {line} ({quoted}) is not allowed: {reason}. \
     Only package requirements are accepted, one per line: a name with optional \
     [extras], version specifiers, an environment marker and --hash options, \
     e.g. requests[socks]>=2.31,<3 ; python_version >= \"3.8\". Options such as \
     --index-url, -f, -r, -c and -e, URLs and paths are refused: packages come \
     from the platform's index; put other code into the zip itself"
)]
pub struct RequirementError {
    pub line: usize,
    quoted: String,
    reason: &'static str,
}

/// The canonical form of a package name (PEP 503).
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
            continue;
        }
        if separator && !out.is_empty() {
            out.push('-');
        }
        separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Whether `name` is a valid package name (PEP 508): letters, digits and
/// `-_.`, starting and ending with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 200
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `version` can be a concrete version (and so a directory name).
pub fn valid_version(version: &str) -> bool {
    let bytes = version.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 100
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'!' | b'-' | b'_'))
}

/// Parses the whole file; the first bad line refuses it.
pub fn parse(text: &str) -> Result<Vec<Requirement>, RequirementError> {
    let mut requirements = Vec::new();
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            first_line = i + 1;
        }
        // pip joins a line ending in a backslash with the next one.
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        if let Some(requirement) = parse_line(&line).map_err(|reason| RequirementError {
            line: first_line,
            quoted: quote(&line),
            reason,
        })? {
            requirements.push(requirement);
        }
    }
    if !pending.is_empty() {
        return Err(RequirementError {
            line: first_line,
            quoted: quote(&pending),
            reason: "the last line ends with a backslash",
        });
    }
    Ok(requirements)
}

/// The line as the user wrote it, short and printable.
fn quote(line: &str) -> String {
    let mut shown: String = line
        .trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(QUOTE_LIMIT)
        .collect();
    if line.trim().chars().count() > QUOTE_LIMIT {
        shown.push('…');
    }
    format!("`{shown}`")
}

/// `Ok(None)` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<Requirement>, &'static str> {
    let line = strip_comment(line).trim();
    if line.is_empty() {
        return Ok(None);
    }
    if line.contains('$') {
        return Err("pip would expand ${...} environment references in it");
    }
    if line.starts_with('-') {
        return Err("it is an option");
    }
    // `--hash` options follow the requirement; nothing else may.
    let (spec, hashes) = split_hashes(line)?;
    let (spec, marker) = match spec.split_once(';') {
        Some((spec, marker)) => (spec.trim(), Some(parse_marker(marker.trim())?)),
        None => (spec.trim(), None),
    };
    if spec.contains('@') || spec.contains("://") {
        return Err("it is a URL requirement (name @ url)");
    }
    if spec.contains('/') || spec.contains('\\') || spec.starts_with('.') {
        return Err("it is a path");
    }
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let name = &spec[..name_end];
    if !valid_name(name) {
        return Err("it does not start with a package name");
    }
    let mut rest = spec[name_end..].trim_start();
    let mut extras = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let (inside, tail) = after.split_once(']').ok_or("its [extras] are not closed")?;
        for extra in inside.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !valid_name(extra) {
                return Err("it names an extra that is not a valid name");
            }
            extras.push(extra.to_string());
        }
        rest = tail.trim_start();
    }
    let specifiers = parse_specifiers(rest)?;
    Ok(Some(Requirement {
        name: name.to_string(),
        extras,
        specifiers,
        marker,
        hashes,
    }))
}

/// pip's rule: `#` starts a comment at the line's start or after a space.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn split_hashes(line: &str) -> Result<(&str, Vec<String>), &'static str> {
    let Some(start) = line.find(" -").or_else(|| line.find("\t-")) else {
        return Ok((line, Vec::new()));
    };
    let mut hashes = Vec::new();
    let mut words = line[start..].split_whitespace().peekable();
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("--hash") {
            Some(rest) if rest.starts_with('=') => rest[1..].to_string(),
            Some("") => words.next().ok_or("--hash has no value")?.to_string(),
            _ => return Err("it has an option other than --hash"),
        };
        let (algorithm, digest) = value
            .split_once(':')
            .ok_or("its --hash is not algorithm:hexdigest")?;
        let known = matches!(algorithm, "sha256" | "sha384" | "sha512");
        if !known || digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("its --hash is not sha256/sha384/sha512:hexdigest");
        }
        // Hex digits in one case, so the same hash always compares equal.
        hashes.push(value.to_ascii_lowercase());
    }
    Ok((&line[..start], hashes))
}

fn parse_specifiers(text: &str) -> Result<Vec<String>, &'static str> {
    let text = text.trim();
    let text = match text.strip_prefix('(') {
        Some(inner) => inner
            .strip_suffix(')')
            .ok_or("its version specifiers' parenthesis is not closed")?,
        None => text,
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|clause| {
            let clause = clause.trim();
            let op_len = clause
                .find(|c: char| !matches!(c, '=' | '!' | '<' | '>' | '~'))
                .unwrap_or(clause.len());
            let (op, version) = clause.split_at(op_len);
            let version = version.trim();
            if !matches!(op, "==" | "!=" | "<=" | ">=" | "<" | ">" | "~=" | "===") {
                return Err("its version specifier is not one of == != <= >= < > ~= ===");
            }
            let ok = !version.is_empty()
                && version.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'*' | b'+' | b'!' | b'-' | b'_')
                });
            if !ok {
                return Err("its version is not a version");
            }
            Ok(format!("{op}{version}"))
        })
        .collect()
}

/// Accepts a marker made only of marker variables, quoted strings,
/// comparison operators, `and`/`or`/`in`/`not` and parentheses.
fn parse_marker(marker: &str) -> Result<String, &'static str> {
    const BAD: &str = "its environment marker has something other than marker \
                       variables, quoted strings, comparisons, and/or and parentheses";
    if marker.is_empty() {
        return Err("it has an empty environment marker after ';'");
    }
    let mut rest = marker;
    while let Some(c) = rest.chars().next() {
        let taken = if c.is_whitespace() || c == '(' || c == ')' {
            c.len_utf8()
        } else if c == '\'' || c == '"' {
            let close = rest[1..].find(c).ok_or(BAD)?;
            if rest[1..=close].contains('\\') {
                return Err(BAD);
            }
            close + 2
        } else if matches!(c, '=' | '!' | '<' | '>' | '~') {
            rest.find(|c: char| !matches!(c, '=' | '!' | '<' | '>' | '~'))
                .unwrap_or(rest.len())
        } else if c.is_ascii_alphabetic() {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if !(MARKER_VARIABLES.contains(&word) || matches!(word, "and" | "or" | "in" | "not")) {
                return Err(BAD);
            }
            end
        } else {
            return Err(BAD);
        };
        rest = &rest[taken..];
    }
    Ok(marker.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Requirement {
        let mut all = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(all.len(), 1, "{line}");
        all.remove(0)
    }

    #[test]
    fn accepts_what_names_packages() {
        assert_eq!(one("six").to_string(), "six");
        assert_eq!(one("six==1.16.0").specifiers, ["==1.16.0"]);
        let r = one("requests[socks, security] >= 2.31 , <3 ; python_version >= \"3.8\"");
        assert_eq!(r.extras, ["socks", "security"]);
        assert_eq!(r.specifiers, [">=2.31", "<3"]);
        assert_eq!(
            r.to_string(),
            "requests[socks,security]>=2.31,<3 ; python_version >= \"3.8\""
        );
        assert_eq!(one("Flask_Cors.x~=3.0").key(), "flask-cors-x");
        assert_eq!(one("pkg (>=1.0)").specifiers, [">=1.0"]);
        assert_eq!(one("pkg==1.*").specifiers, ["==1.*"]);
        let hashed = one("six==1.16.0 \\\n    --hash=sha256:ABCdef0123 --hash sha512:ff");
        assert_eq!(hashed.hashes, ["sha256:abcdef0123", "sha512:ff"]);
        assert_eq!(
            hashed.to_string(),
            "six==1.16.0 --hash=sha256:abcdef0123 --hash=sha512:ff"
        );
        let marker = one("pywin32 ; sys_platform == 'win32' and (python_version < '3.12')");
        assert!(marker.marker.is_some());
        let all = parse("# comment\n\nsix # why\nidna>=3\n").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, "idna");
    }

    #[test]
    fn refuses_everything_else_naming_the_line() {
        let bad = [
            "--index-url https://example.invalid/simple",
            "--extra-index-url https://example.invalid/simple",
            "-i https://example.invalid/simple",
            "-f https://example.invalid/links",
            "--find-links=/tmp",
            "-r /proc/self/environ",
            "-c constraints.txt",
            "-e git+https://example.invalid/x.git#egg=x",
            "--pre",
            "--trusted-host example.invalid",
            "pkg @ https://example.invalid/pkg.tar.gz",
            "pkg@file:///etc/passwd",
            "https://example.invalid/pkg.whl",
            "./local/dir",
            "/abs/path.whl",
            "pkg.tar.gz/x",
            "six==1.0 --no-binary :all:",
            "six==1.0 --index-url=x",
            "six==${SECRET}",
            "six ; os_name == '${HOME}'",
            "six ; __import__('os')",
            "six ; os_name == 'x\\'",
            "six==1.0 --hash=md5:abc",
            "six[bad extra]",
            "six (>=1.0",
            "six =>1",
            "six==1.0;",
            "six==1.0 \\",
        ];
        for line in bad {
            let text = format!("# first\nsix\n{line}\n");
            let err = parse(&text).expect_err(line);
            assert_eq!(err.line, 3, "{line}");
            let message = err.to_string();
            assert!(message.contains("line 3"), "{message}");
            assert!(message.contains("Only package requirements"), "{message}");
        }
    }

    #[test]
    fn quotes_the_line_short_and_printable() {
        let long = format!("-r {}", "x".repeat(500));
        let message = parse(&long).unwrap_err().to_string();
        assert!(message.len() < 900, "{message}");
        let message = parse("-r /proc/self/environ").unwrap_err().to_string();
        assert!(message.contains("`-r /proc/self/environ`"), "{message}");
        let message = parse("\u{1b}[31m-x").unwrap_err().to_string();
        assert!(!message.contains('\u{1b}'), "{message}");
    }

    #[test]
    fn names_and_versions_that_can_be_directories() {
        assert!(valid_name("six") && valid_name("zope.interface"));
        assert!(!valid_name("../x") && !valid_name("-x") && !valid_name(""));
        assert!(valid_version("1.16.0") && valid_version("2.0.0rc1+local"));
        assert!(!valid_version("../1") && !valid_version("1/2") && !valid_version(".1"));
        assert_eq!(normalize("Zope.Interface__x"), "zope-interface-x");
    }
}
