//! Compiled `appName` regexes and `allowedImages`/`allowedServiceAccounts` globs, shared
//! between the policies that spell them the same way.
//!
//! Compiling one costs ~150k instructions, and a large policy set repeats a few patterns
//! many times (one per team namespace): compiling each text once per process made a reload
//! of 10,000 policies cheaper, and every policy then holds the same automaton instead of a
//! copy of its own.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use globset::Glob;
use regex_automata::meta;
use regex_automata::util::syntax;

/// A compiled `appName` regex or glob. Built with regex-automata's meta engine like the
/// `regex` and `globset` crates do, same syntax and same matches, but without the full
/// DFA those crates build up front for small patterns: that DFA was half the time of
/// compiling a policy set (a reload), and the lazy DFA used instead is built as it matches.
#[derive(Debug, Clone)]
pub struct Pattern(meta::Regex);

impl Pattern {
    /// A regular expression, as `regex::Regex::new` reads it.
    pub fn regex(pattern: &str) -> Result<Self, String> {
        cached(Syntax::Regex, pattern, || {
            meta::Regex::builder()
                .configure(meta::Config::new().dfa(false))
                .build(pattern)
                // The syntax error's own text, as `regex::Error` shows it.
                .map_err(|e| {
                    e.syntax_error()
                        .map_or_else(|| e.to_string(), |s| s.to_string())
                })
        })
    }

    /// A glob, as `globset::Glob::compile_matcher` matches it (on the bytes of the text).
    pub fn glob(glob: &str) -> Result<Self, String> {
        cached(Syntax::Glob, glob, || {
            let re = Glob::new(glob).map_err(|e| e.to_string())?;
            meta::Regex::builder()
                .syntax(syntax::Config::new().utf8(false).dot_matches_new_line(true))
                .configure(
                    meta::Config::new()
                        .dfa(false)
                        .utf8_empty(false)
                        .nfa_size_limit(Some(10 * (1 << 20)))
                        .hybrid_cache_capacity(10 * (1 << 20)),
                )
                .build(re.regex())
                .map_err(|e| format!("{glob}: {e}"))
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text.as_bytes())
    }
}

/// Which syntax a cached pattern was read with: the same text is a different automaton
/// as a regex and as a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Syntax {
    Regex,
    Glob,
}

/// The cache holds at most this many bytes of automata (as regex-automata counts them)
/// and starts over when the next one would not fit. Policies are admin-written, but
/// `/validate-policy` compiles whatever ConfigMap it is sent, and one short pattern can
/// be megabytes of automaton (`\w{1000}`): memory, not a count, is what must be bounded.
const CACHE_BYTES: usize = 32 << 20;
/// An automaton larger than this is not kept: it is rare in a real policy and would
/// crowd out the many small ones the cache is for.
const ENTRY_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Cache {
    patterns: HashMap<(Syntax, String), meta::Regex>,
    bytes: usize,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// The compiled pattern for `text`, from the cache or built by `build` (and then kept).
/// A build that fails is not kept: its error is made again each time. A poisoned lock
/// only means another thread panicked while holding it; the map is still whole, so it is
/// used anyway. A clone shares the compiled automaton and gets a match cache of its own.
fn cached(
    syntax: Syntax,
    text: &str,
    build: impl FnOnce() -> Result<meta::Regex, String>,
) -> Result<Pattern, String> {
    let key = (syntax, text.to_owned());
    if let Some(re) = lock().patterns.get(&key) {
        return Ok(Pattern(re.clone()));
    }
    // Built outside the lock: two threads may build the same text once each.
    let re = build()?;
    let size = re.memory_usage() + text.len();
    if size <= ENTRY_BYTES {
        let mut cache = lock();
        if cache.bytes + size > CACHE_BYTES {
            *cache = Cache::default();
        }
        if cache.patterns.insert(key, re.clone()).is_none() {
            cache.bytes += size;
        }
    }
    Ok(Pattern(re))
}

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    cache().lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that look into the process-wide cache, one at a time: one of them makes
    /// it start over.
    static CACHE_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn globs_match_as_globset_matches_them() {
        let globs = [
            "apache/spark:*",
            "registry.example.com/spark/*",
            "*",
            "team-?",
            "spark-[ab]*",
            "{a,b}/*",
            "**/x",
            "a*b*c",
        ];
        let texts = [
            "apache/spark:3.5.3",
            "apache/spark",
            "registry.example.com/spark/x:1",
            "registry.example.com/spark/a/b:1",
            "team-a",
            "team-ab",
            "spark-a1",
            "spark-c",
            "a/1",
            "c/1",
            "deep/path/x",
            "x",
            "aXbYc",
            "",
            "line\nbreak",
            "ünïcode",
        ];
        for g in globs {
            let ours = Pattern::glob(g).unwrap();
            let theirs = Glob::new(g).unwrap().compile_matcher();
            for t in texts {
                assert_eq!(ours.is_match(t), theirs.is_match(t), "{g:?} on {t:?}");
            }
        }
        assert!(Pattern::glob("a[").is_err());
    }

    #[test]
    fn regexes_match_with_the_regex_crate_syntax() {
        let re = Pattern::regex("^(spark|client|pyspark)").unwrap();
        assert!(re.is_match("spark-pi") && re.is_match("pyspark-pi"));
        assert!(!re.is_match("my-spark"));
        assert!(Pattern::regex(r"^\p{L}+$").unwrap().is_match("ünïcode"));
        assert!(Pattern::regex(".").unwrap().is_match("x"));
        assert!(!Pattern::regex(".").unwrap().is_match(""));
        let err = Pattern::regex("([").unwrap_err();
        assert!(err.lines().last().unwrap().contains("unclosed"), "{err}");
    }

    #[test]
    fn a_pattern_built_once_is_kept_and_a_broken_one_never() {
        let _one = CACHE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        // Texts no other test uses, so the counts are this test's own.
        let first = Pattern::regex("^shared-once-[0-9]+$").unwrap();
        let again = Pattern::regex("^shared-once-[0-9]+$").unwrap();
        assert!(first.is_match("shared-once-12") && again.is_match("shared-once-3"));
        assert!(!again.is_match("shared-once-x"));
        // The same text as a glob is another automaton with other matches.
        let glob = Pattern::glob("^shared-once-[0-9]+$").unwrap();
        assert!(!glob.is_match("shared-once-12"));
        assert!(glob.is_match("^shared-once-7+$"));
        let cache = lock();
        assert!(cache
            .patterns
            .contains_key(&(Syntax::Regex, "^shared-once-[0-9]+$".to_owned())));
        assert!(cache
            .patterns
            .contains_key(&(Syntax::Glob, "^shared-once-[0-9]+$".to_owned())));
        drop(cache);
        // A broken pattern is refused every time, never cached.
        for _ in 0..2 {
            assert!(Pattern::regex("(shared-once").is_err());
        }
        assert!(!lock()
            .patterns
            .contains_key(&(Syntax::Regex, "(shared-once".to_owned())));
    }

    #[test]
    fn a_large_automaton_is_built_but_not_kept_and_the_cache_stays_bounded() {
        let _one = CACHE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        // A few characters, well over a megabyte of automaton.
        let big = r"\w{50}shared-large";
        let re = Pattern::regex(big).unwrap();
        assert!(re.0.memory_usage() > ENTRY_BYTES, "{}", re.0.memory_usage());
        assert!(re.is_match(&format!("{}shared-large", "é".repeat(50))));
        assert!(!lock()
            .patterns
            .contains_key(&(Syntax::Regex, big.to_owned())));
        // ~0.8 MB each: 60 of them are more than the cache holds, so it starts over.
        for i in 0..60 {
            let re = Pattern::regex(&format!(r"\w{{15}}shared-bound-{i}")).unwrap();
            assert!(re.0.memory_usage() <= ENTRY_BYTES);
        }
        let cache = lock();
        assert!(cache.bytes <= CACHE_BYTES, "{}", cache.bytes);
        let counted: usize = cache
            .patterns
            .iter()
            .map(|((_, text), re)| re.memory_usage() + text.len())
            .sum();
        assert_eq!(counted, cache.bytes);
    }
}
