//! Kubernetes resource quantities ("500m", "2560Mi", "1.5G", "2e3") as numbers, for comparisons.
//!
//! k8s-openapi keeps quantities as strings and no maintained crate parses them; this is the
//! small subset of apimachinery's grammar we need to compare requests and limits.

/// The value of a quantity in base units (cores, bytes, devices), or `None` if malformed.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() || number == "+" || number == "-" || number == "." {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        // The API server writes tiny quantities with these suffixes (canonical form).
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            10f64.powi(exp)
        }
        _ => return None,
    };
    let v = value * scale;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_the_forms_spark_and_admins_write() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("2560Mi"), Some(2560.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("1E"), Some(1e18));
        assert_eq!(parse("1500n"), Some(1500e-9));
        assert_eq!(parse("2u"), Some(2e-6));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "m", "abc", "1x", "1.2.3", "--1", "1e", "Mi"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
