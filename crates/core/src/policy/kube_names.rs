//! The API server's syntax for the names and label keys and values a policy writes into a
//! pod (apimachinery's `IsQualifiedName`, `IsValidLabelValue`, `IsDNS1123Label`,
//! `IsDNS1123Subdomain`). A policy that breaks it would have every pod it patches refused
//! by the API server, so the policy is refused at load instead, naming the field.

const NAME_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// `[A-Za-z0-9]`, then `[-A-Za-z0-9_.]`, ending alphanumeric.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `[a-z0-9]`, then `[-a-z0-9]`, ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters.
pub(crate) fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|e| format!("its prefix (before /) {e}"))?;
    }
    if name.is_empty() {
        return Err("needs a name (after any prefix/)".to_owned());
    }
    let form = "consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character";
    check(name, NAME_MAX, is_name_part(name), form).map_err(|e| format!("its name part {e}"))
}

/// `Ok` when `s` is at most `max` bytes and `well_formed`; else what is wrong with it.
fn check(s: &str, max: usize, well_formed: bool, form: &str) -> Result<(), String> {
    if s.len() > max {
        Err(format!("must be {max} characters or less"))
    } else if !well_formed {
        Err(format!("must {form}"))
    } else {
        Ok(())
    }
}

/// A label value: empty, or at most 63 characters of the name-part alphabet.
pub(crate) fn label_value(value: &str) -> Result<(), String> {
    let form = "be empty or consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character";
    check(
        value,
        NAME_MAX,
        value.is_empty() || is_name_part(value),
        form,
    )
}

/// A DNS-1123 label: volume and container names.
pub(crate) fn dns_label(name: &str) -> Result<(), String> {
    let form = "consist of lower case alphanumeric characters or '-', and start and end with an alphanumeric character";
    check(name, NAME_MAX, is_dns_label(name), form)
}

/// A DNS-1123 subdomain: priority and runtime class names, key prefixes.
pub(crate) fn dns_subdomain(name: &str) -> Result<(), String> {
    let form = "consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character";
    check(name, SUBDOMAIN_MAX, name.split('.').all(is_dns_label), form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_the_api_server_takes_them() {
        for ok in [
            "team",
            "a",
            "app.kubernetes.io/name",
            "example.com/cost-center",
            "Team_A.b-c",
            "x/y",
            &"k".repeat(63),
            &format!("{}/n", "p".repeat(253)),
        ] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "cost center",
            "-team",
            "team-",
            "a/b/c",
            "/name",
            "Example.com/x",
            "example.com/",
            "ex_ample.com/x",
            "caf\u{e9}",
            &"k".repeat(64),
            &format!("{}/n", "p".repeat(254)),
        ] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_as_the_api_server_takes_them() {
        for ok in ["", "data", "data-platform", "v1.2_3", &"v".repeat(63)] {
            assert_eq!(label_value(ok), Ok(()), "{ok}");
        }
        for bad in [
            "data platform",
            "-x",
            "x.",
            "a/b",
            "\u{fc}",
            &"v".repeat(64),
        ] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_names_as_the_api_server_takes_them() {
        for ok in ["spark", "spark-driver", "a1", "0"] {
            assert_eq!(dns_label(ok), Ok(()), "{ok}");
            assert_eq!(dns_subdomain(ok), Ok(()), "{ok}");
        }
        assert_eq!(dns_subdomain("high.priority"), Ok(()));
        assert!(dns_label("high.priority").is_err());
        for bad in ["", "Spark", "spark_driver", "-a", "a-", "a..b", ".a", "a."] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(dns_label(&"a".repeat(64)).is_err());
        let part = "a".repeat(63);
        assert_eq!(dns_subdomain(&[part.as_str(); 3].join(".")), Ok(()));
        assert!(dns_subdomain(&[part.as_str(); 4].join(".")).is_err());
    }
}
