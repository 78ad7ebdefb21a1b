//! The bad-input corpus, built from a real review: `robustness_bad_input` checks the answer
//! to each body, `robustness_memory` sends them in rounds and watches the server's memory.

use serde_json::{json, Value};

use super::{fixture_json, to_bytes};

/// The real review every case starts from.
pub fn review() -> Value {
    fixture_json("mutate-driver-scala-sparkpi.json")
}

/// Bodies that are not a review we can answer: `(what, body, a word the 400 reason holds)`.
pub fn malformed_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = to_bytes(&review());
    let nested = format!(
        "{{\"request\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut no_uid = review();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut wrong_version = review();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut wrong_kind = review();
    wrong_kind["kind"] = json!("ConversionReview");
    let mut create_without_object = review();
    create_without_object["request"]["oldObject"] =
        create_without_object["request"]["object"].take();
    let duplicate =
        String::from_utf8(good.clone())
            .unwrap()
            .replacen('{', "{\"kind\":\"AdmissionReview\",", 1);
    let mut invalid_utf8 = good.clone();
    invalid_utf8.splice(40..40, [0xff, 0xfe, 0xc3]);
    // In a field nobody reads (found by the review fuzzer): still not text, still 400.
    let text = String::from_utf8(good.clone()).unwrap();
    let at = text.find("\"f:metadata\"").unwrap() + 3;
    let mut invalid_utf8_skipped = good.clone();
    invalid_utf8_skipped[at] = 0x8f;

    vec![
        ("truncated", good[..good.len() / 2].to_vec(), "not JSON"),
        ("empty", Vec::new(), "not JSON"),
        ("deeply nested", nested.into_bytes(), ""),
        ("no uid", to_bytes(&no_uid), "uid"),
        ("v1beta1", to_bytes(&wrong_version), "admission.k8s.io/v1"),
        ("unknown kind", to_bytes(&wrong_kind), "AdmissionReview"),
        (
            "no request",
            to_bytes(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})),
            "no request",
        ),
        (
            "CREATE with only oldObject",
            to_bytes(&create_without_object),
            "object",
        ),
        ("duplicate keys", duplicate.into_bytes(), "duplicate"),
        ("invalid UTF-8", invalid_utf8, ""),
        (
            "invalid UTF-8 in an ignored field",
            invalid_utf8_skipped,
            "UTF-8",
        ),
        ("a JSON array", b"[1,2,3]".to_vec(), ""),
    ]
}

/// A real pod with one field replaced by a value of the wrong JSON type.
pub struct WrongType {
    pub what: String,
    pub body: Vec<u8>,
    /// The replacement has the field's own JSON type (or is an object where an absent
    /// object field goes): unknown keys are ignored as the API server prunes them, so such
    /// a pod may still be valid and get 200.
    pub same_kind: bool,
}

/// Five wrong values in each of 16 pod fields.
pub fn wrong_type_reviews() -> Vec<WrongType> {
    let fields = [
        "/metadata/labels",
        "/metadata/annotations",
        "/metadata/name",
        "/spec/containers",
        "/spec/containers/0/env",
        "/spec/containers/0/resources",
        "/spec/containers/0/volumeMounts",
        "/spec/containers/0/name",
        "/spec/volumes",
        "/spec/tolerations",
        "/spec/nodeSelector",
        "/spec/affinity",
        "/spec/priority",
        "/spec/terminationGracePeriodSeconds",
        "/spec/securityContext",
        "/spec/imagePullSecrets",
    ];
    let mut out = Vec::new();
    for path in fields {
        for wrong in [
            json!(42),
            json!("text"),
            json!([1]),
            json!({"x": {"y": 1}}),
            json!(true),
        ] {
            let mut r = fixture_json("mutate-driver-rich.json");
            let (parent, key) = path.rsplit_once('/').unwrap();
            let parent = r["request"]["object"].pointer_mut(parent).unwrap();
            let slot = match parent {
                Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                other => other
                    .as_object_mut()
                    .unwrap()
                    .entry(key)
                    .or_insert(Value::Null),
            };
            let same_kind = std::mem::discriminant(&*slot) == std::mem::discriminant(&wrong)
                || (slot.is_null() && wrong.is_object());
            *slot = wrong.clone();
            out.push(WrongType {
                what: format!("{path} = {wrong}"),
                body: to_bytes(&r),
                same_kind,
            });
        }
    }
    out
}

/// Valid reviews with a huge pod, under the 3 MiB body limit and within the engine's list
/// limits (`PodLimits`: 30,000 env entries would be refused, 422): answered with a patch.
pub fn huge_valid_reviews() -> Vec<(&'static str, Value)> {
    let mut big_string = review();
    big_string["request"]["object"]["metadata"]["annotations"] =
        json!({"big": "x".repeat(2 * 1024 * 1024)});
    let mut big_array = review();
    // As many args as a Spark pod may carry (`PodLimits::arguments`); more are refused.
    big_array["request"]["object"]["spec"]["containers"][0]["args"] = json!((0..4_096)
        .map(|i| format!("--application-arg-{i}=1"))
        .collect::<Vec<_>>());
    vec![("2 MiB string", big_string), ("4,096 args", big_array)]
}

/// A review whose body is over the 3 MiB limit (4 MiB of annotation): 413.
pub fn oversized_review() -> Value {
    let mut r = review();
    r["request"]["object"]["metadata"]["annotations"] = json!({"big": "x".repeat(4 * 1024 * 1024)});
    r
}
