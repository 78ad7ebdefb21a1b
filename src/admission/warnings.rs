//! Warnings as the API server passes them on to kubectl. It shows a request's warnings
//! whole while all of them (every webhook's and its own) come to at most 4,096
//! characters; past that it cuts each to 256 characters and drops the rest without a word
//! (k8s.io/apiserver `endpoints/filters/warning.go`; with a real API server, 20 of a pod's
//! 30 image warnings reached kubectl). So an answer keeps to a share of that, and a pod
//! that earns more gets the first whole warnings and a last one saying how many were
//! left out.

/// The characters of warnings the API server passes on whole, per request.
const API_SERVER_WHOLE: usize = 4096;
/// What one answer keeps to: room is left for the API server's own warnings (deprecated
/// fields). Our other webhook answers the same request, but seldom warns much at the same
/// time; when both do, the API server cuts as it did before, and a smaller share for each
/// would cut the common case (one of them warning a lot) for nothing.
const BUDGET: usize = API_SERVER_WHOLE - 256;

/// Where a submitter's left-out warnings can be read.
pub(super) const FOR_A_POD: &str =
    "your platform admins' `spark-admission explain` on this pod lists them all";
/// Where an admin's left-out warnings about a policy ConfigMap show.
pub(super) const FOR_A_POLICY_CONFIGMAP: &str =
    "fix the ones shown and apply again to see the rest";

/// `warnings` if they fit in [`BUDGET`] characters; otherwise the first that fit, whole,
/// and a last warning counting the rest, pointing at `whole_list` (where all of them are).
pub(super) fn fit(warnings: Vec<String>, whole_list: &str) -> Vec<String> {
    let chars = |w: &String| w.chars().count();
    if warnings.iter().map(chars).sum::<usize>() <= BUDGET {
        return warnings;
    }
    let total = warnings.len();
    // Room for the closing line with the largest count it can say.
    let closing = chars(&closing_line(total, whole_list));
    let mut kept = Vec::new();
    let mut used = 0;
    for w in warnings {
        let n = chars(&w);
        if used + n + closing > BUDGET {
            break;
        }
        used += n;
        kept.push(w);
    }
    let left = total - kept.len();
    kept.push(closing_line(left, whole_list));
    kept
}

fn closing_line(left: usize, whole_list: &str) -> String {
    format!(
        "spark-admission: {left} more warning(s) left out, since the API server passes on only 4,096 characters of warnings whole; {whole_list}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(n: usize, len: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{i:03}{}", "w".repeat(len - 3)))
            .collect()
    }

    #[test]
    fn warnings_that_fit_are_kept_as_they_are() {
        for list in [vec![], warnings(1, 200), warnings(5, 200)] {
            assert_eq!(fit(list.clone(), "x"), list);
        }
        let exactly = warnings(15, 256);
        assert_eq!(fit(exactly.clone(), "x"), exactly);
    }

    #[test]
    fn too_many_keep_the_first_whole_and_count_the_rest() {
        let list = warnings(30, 205);
        let fitted = fit(list.clone(), "explain lists them all");
        let (last, shown) = fitted.split_last().unwrap();
        assert!(!shown.is_empty());
        assert_eq!(
            shown,
            &list[..shown.len()],
            "the first ones, whole, in order"
        );
        assert_eq!(
            *last,
            format!(
                "spark-admission: {} more warning(s) left out, since the API server passes on only 4,096 characters of warnings whole; explain lists them all",
                30 - shown.len()
            )
        );
        let chars: usize = fitted.iter().map(|w| w.chars().count()).sum();
        assert!(chars <= BUDGET, "{chars}");
        // As many as fit: one more would not.
        assert!(chars + 205 > BUDGET, "{chars}");
    }

    #[test]
    fn characters_are_counted_not_bytes_and_a_long_first_warning_leaves_only_the_count() {
        // 3,600 characters fit; as bytes (7,200) they would not.
        let wide = vec!["é".repeat(1200); 3];
        assert_eq!(fit(wide.clone(), "x"), wide);
        let fitted = fit(vec!["x".repeat(5000), "short".to_owned()], "x");
        assert_eq!(fitted.len(), 1);
        assert!(fitted[0].starts_with("spark-admission: 2 more warning(s)"));
    }
}
