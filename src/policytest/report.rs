//! What a run found, and its three renderings: text (a line per case, a diff per failed
//! expectation, a summary), JSON, and JUnit XML for CI systems.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::compare::Mismatch;
use super::load::InputError;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub files: Vec<FileReport>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    /// Cases whose expectations `--update` rewrote.
    pub updated: usize,
    /// Test files that could not be run (bad input).
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    pub file: String,
    /// Why the file could not be run; its cases are then absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<InputError>,
    /// Problems of the policy set that do not stop it (a policy defined twice).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_warnings: Vec<String>,
    pub cases: Vec<CaseReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub pod: String,
    pub namespace: String,
    pub status: CaseStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseStatus {
    Pass,
    Fail,
    /// Did not hold, and `--update` wrote the current answer as its expectation.
    Updated,
}

impl RunReport {
    pub fn tally(&mut self) {
        let mut s = Summary {
            errors: self.files.iter().filter(|f| !f.errors.is_empty()).count(),
            ..Summary::default()
        };
        for c in self.files.iter().flat_map(|f| &f.cases) {
            match c.status {
                CaseStatus::Pass => s.passed += 1,
                CaseStatus::Fail => s.failed += 1,
                CaseStatus::Updated => s.updated += 1,
            }
        }
        self.summary = s;
    }
}

/// The text report.
pub fn render_text(r: &RunReport) -> String {
    let mut s = String::new();
    for f in &r.files {
        for e in &f.errors {
            let _ = writeln!(s, "ERROR {e}");
        }
        for w in &f.policy_warnings {
            let _ = writeln!(s, "warning: {}: {w}", f.file);
        }
        for c in &f.cases {
            let status = match c.status {
                CaseStatus::Pass => "PASS ",
                CaseStatus::Fail => "FAIL ",
                CaseStatus::Updated => "UPDATED",
            };
            let _ = writeln!(
                s,
                "{status} {}: {} (pod {}, namespace {})",
                f.file, c.name, c.pod, c.namespace
            );
            // For an updated case the diff shows what the review of the new expectation is about.
            if c.status != CaseStatus::Pass {
                for m in &c.mismatches {
                    render_mismatch(&mut s, m);
                }
            }
        }
    }
    let sm = &r.summary;
    let _ = write!(s, "\n{} passed, {} failed", sm.passed, sm.failed);
    if sm.updated > 0 {
        let _ = write!(s, ", {} updated", sm.updated);
    }
    if sm.errors > 0 {
        let _ = write!(s, ", {} test file(s) could not be run", sm.errors);
    }
    let _ = writeln!(s, " ({} test file(s))", r.files.len());
    s
}

fn render_mismatch(s: &mut String, m: &Mismatch) {
    let _ = write!(s, "      {}{}", m.field, m.path);
    match &m.note {
        Some(n) => {
            let _ = writeln!(s, ": {n}");
        }
        None => {
            let _ = writeln!(s);
        }
    }
    if m.field != "warnings" || m.expected.is_some() {
        let _ = writeln!(s, "        expected: {}", show(m.expected.as_ref()));
    }
    if m.field != "warnings" || m.actual.is_some() {
        let _ = writeln!(s, "        actual:   {}", show(m.actual.as_ref()));
    }
}

/// One line when short, else indented pretty JSON.
fn show(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "(absent)".to_owned();
    };
    if let Value::String(text) = v {
        return format!("{text:?}");
    }
    let line = v.to_string();
    if line.len() <= 100 {
        return line;
    }
    serde_json::to_string_pretty(v)
        .unwrap_or(line)
        .replace('\n', "\n                  ")
}

/// JUnit XML: a testsuite per test file, a testcase per case; a file that could not be
/// run is one testcase with an `<error>`.
pub fn render_junit(r: &RunReport) -> String {
    let mut s = String::new();
    // A file with errors counts one testcase more: the `<error>` one.
    let tests = |f: &FileReport| f.cases.len() + usize::from(!f.errors.is_empty());
    let total: usize = r.files.iter().map(tests).sum();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<testsuites name="spark-admission test" tests="{total}" failures="{}" errors="{}">"#,
        r.summary.failed, r.summary.errors
    );
    for f in &r.files {
        let file = xml(&f.file);
        let failures = f
            .cases
            .iter()
            .filter(|c| c.status == CaseStatus::Fail)
            .count();
        let _ = writeln!(
            s,
            r#"  <testsuite name="{file}" tests="{}" failures="{failures}" errors="{}">"#,
            tests(f),
            usize::from(!f.errors.is_empty())
        );
        if !f.errors.is_empty() {
            let text: Vec<String> = f.errors.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                r#"    <testcase name="load" classname="{file}"><error message="the test file could not be run">{}</error></testcase>"#,
                xml(&text.join("\n"))
            );
        }
        for c in &f.cases {
            let _ = write!(
                s,
                r#"    <testcase name="{}" classname="{file}">"#,
                xml(&c.name)
            );
            if c.status == CaseStatus::Fail {
                let mut detail = String::new();
                for m in &c.mismatches {
                    render_mismatch(&mut detail, m);
                }
                let _ = write!(
                    s,
                    r#"<failure message="{} expectation(s) do not hold">{}</failure>"#,
                    c.mismatches.len(),
                    xml(&detail)
                );
            }
            let _ = writeln!(s, "</testcase>");
        }
        let _ = writeln!(s, "  </testsuite>");
    }
    let _ = writeln!(s, "</testsuites>");
    s
}

/// Escapes text for XML content and attribute values; characters XML 1.0 cannot carry at
/// all (most control characters) become U+FFFD.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_quotes_and_drops_control_characters() {
        assert_eq!(
            xml("a<b>&\"c\" 'd'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&quot; &apos;d&apos;\u{FFFD}\n"
        );
    }
}
